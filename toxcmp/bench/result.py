"""What every `toxcmp bench` result shares: a frozen dataclass that `--json` prints through `to_dict`."""

from __future__ import annotations

from dataclasses import asdict


class BenchResult:
    """Mixin for the benchmarks' frozen result dataclasses: `to_dict()` is their fields (`--json`'s payload);
    a result with derived values (a budget verdict) adds them in its own `to_dict`."""

    def to_dict(self) -> dict:
        return asdict(self)
