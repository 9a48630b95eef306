"""`make demo`: the main job on the embedded default until `compare` lands.

Classifies the bundled ToxicChat sample with `smollm2-135m` through the `local` backend and through the `api`
backend pointed at a `transformers serve` process started on 127.0.0.1 for the same model, then prints both
verdicts side by side and how often they agree.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .backends import BackendConfig, get_backend
from .cache import ResponseCache
from .config import GenerationConfig, configs_dir, default_cache_dir
from .core import verdict_result
from .models import resolve_model
from .policies import load_policy
from .prompting import build_request
from .runner import run_requests


def sample_rows(limit: int) -> list[dict[str, str]]:
    path = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))[:limit]


def main(limit: int = int(os.environ.get("TOXCMP_DEMO_ROWS", "8"))) -> int:
    console = Console()
    policy = load_policy("toxic_simple")
    spec = resolve_model("smollm2-135m")
    generation = GenerationConfig.from_defaults(max_new_tokens=32)
    rows = sample_rows(limit)
    requests = [build_request(policy, r["user_input"], spec, generation, example_id=r["conv_id"]) for r in rows]
    cache = ResponseCache(Path(default_cache_dir()))
    config = BackendConfig(cache_dir=default_cache_dir())
    results = {}
    try:
        for backend in ("local", "api"):
            with console.status(f"running {len(rows)} rows on {backend}…"):
                engine = get_backend(backend, replace(config, api_server="local") if backend == "api" else config)
                try:
                    results[backend] = run_requests(engine, requests, cache)
                finally:
                    engine.close()  # stops the spawned server, if one was needed
    finally:
        cache.close()
    table = Table(title=f"{spec.name} · {policy.name} · local vs api (transformers serve on 127.0.0.1)")
    for col in ("id", "truth", "local", "api", "same answer", "text"):
        table.add_column(col)
    same = 0
    for row, local, api in zip(rows, results["local"], results["api"]):
        lv, av = verdict_result(local, policy), verdict_result(api, policy)
        identical = local.ok and api.ok and local.content == api.content
        same += identical
        show = lambda v: str(v.binary_label) if v.parse_ok else ("refusal" if v.refusal else "unparsed")  # noqa: E731
        table.add_row(row["conv_id"][:8], row["toxicity"], show(lv), show(av), "✓" if identical else "✗",
                      row["user_input"][:40].replace("\n", " "))
    console.print(table)
    console.print(f"identical final answers: {same}/{len(rows)} ({same / len(rows):.0%}); "
                  "the tiny model rarely answers with a bare label, so most verdicts are 'unparsed' — "
                  "the point is that both backends say the same thing.")
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
