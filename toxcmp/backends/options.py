"""What a backend can be told, declared once per backend: each option's type, default, whether it can change an
answer, and its check. The cache key and the run id are derived from this declaration (`identity()`), so an
option a backend adds is part of its identity the moment it is declared as answer-changing, never by a
hand-kept list.

    @dataclass(frozen=True)
    class MyOptions(BackendOptions):
        endpoint_url: str | None = option(None, changes_answer=True, help="where to send requests")

`BackendOptions.build(settings, written)` takes the run-wide settings (the command line's flags, a
`BackendConfig`) for the keys this backend declares, then the options written in its spec
(`name[key=value;…]`, strings parsed by the declared type); an unknown key is an error that lists this
backend's keys.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping

from toxcmp.errors import UsageError


def option(default: Any, *, changes_answer: bool, help: str, secret: bool = False) -> Any:
    """A declared backend option. `changes_answer`: part of the cache key and the run id. `secret`: never
    printed, recorded or part of an identity (a token)."""
    if secret and changes_answer:
        raise ValueError("a secret option cannot be part of an identity")
    return field(default=default, repr=not secret,
                 metadata={"changes_answer": changes_answer, "help": help, "secret": secret})


@dataclass(frozen=True)
class BackendOptions:
    """Options every backend takes. Subclasses add their own (frozen dataclasses, fields made with `option`)."""

    cache_dir: Path | None = option(None, changes_answer=False, help="response cache and converted models")
    threads: int | None = option(None, changes_answer=False,
                                 help="CPU threads this backend computes with; None: chosen from the cores")

    aliases: ClassVar[Mapping[str, str]] = {}  # other spellings accepted in a spec (`path` for `recording`)

    # -- the declaration ---------------------------------------------------------------------------------
    @classmethod
    def declared(cls) -> dict[str, Any]:
        """Every declared option by name (dataclass fields made with `option`)."""
        return {f.name: f for f in fields(cls) if "changes_answer" in f.metadata}

    @classmethod
    def keys(cls) -> list[str]:
        """What a spec may set (secrets only through settings, never written in a spec)."""
        return sorted(name for name, f in cls.declared().items() if not f.metadata["secret"])

    @classmethod
    def answer_changing(cls) -> list[str]:
        return sorted(name for name, f in cls.declared().items() if f.metadata["changes_answer"])

    def identity(self) -> dict[str, Any]:
        """The options that can change an answer, as recorded in the cache key and the run id."""
        return {name: _plain(getattr(self, name)) for name in self.answer_changing()}

    def recorded(self) -> dict[str, Any]:
        """Every non-secret option with its value, for provenance."""
        return {name: _plain(getattr(self, name)) for name, f in self.declared().items()
                if not f.metadata["secret"]}

    # -- building and checking ---------------------------------------------------------------------------
    @classmethod
    def build(cls, settings: Any = None, written: Mapping[str, str] | None = None, where: str = "") -> "BackendOptions":
        """Options from run-wide `settings` (any object or mapping; only the keys declared here are read),
        overridden by the strings `written` in a spec; then checked."""
        declared = cls.declared()
        values: dict[str, Any] = {}
        if settings is not None:
            items = settings.items() if isinstance(settings, Mapping) else (
                (name, getattr(settings, name)) for name in declared if hasattr(settings, name))
            values.update((k, v) for k, v in items if k in declared)
        suffix = f" in {where}" if where else ""
        for key, text in (written or {}).items():
            name = cls.aliases.get(key, key)
            if name not in declared or declared[name].metadata["secret"]:
                raise UsageError(f"unknown option {key!r}{suffix}", f"this backend takes: {', '.join(cls.keys())}")
            values[name] = cls.parse(name, text, suffix)
        built = cls(**values)
        built.check(suffix)
        return built

    @classmethod
    def parse(cls, name: str, text: str, suffix: str = "") -> Any:
        """A spec's string as the declared type of `name` (`int | None`, `float`, `bool`, `str`, `Path`)."""
        hints = typing.get_type_hints(cls)
        kinds = [t for t in _members(hints[name]) if t is not type(None)]
        if text.strip().lower() in ("", "none") and type(None) in _members(hints[name]):
            return None
        for kind in kinds:
            try:
                if kind is bool:
                    if text.strip().lower() in ("1", "true", "yes", "on"):
                        return True
                    if text.strip().lower() in ("0", "false", "no", "off"):
                        return False
                    raise ValueError(text)
                return kind(text)
            except (TypeError, ValueError):
                continue
        expected = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
        raise UsageError(f"option {name}={text!r}{suffix} is not a {expected}", f"e.g. {name}={_example(kinds)}")

    def check(self, suffix: str = "") -> None:
        """One line per bad value, with what to do next. Subclasses extend it (and call super)."""
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"threads must be at least 1 (got {self.threads}){suffix}", "e.g. threads=2")

    def with_values(self, **values: Any) -> "BackendOptions":
        return replace(self, **values)

    # -- what the run asks of an arm's options (hooks; the defaults suit a backend that computes elsewhere) -----
    def resolve(self, model: Any, hint: str = "") -> tuple["BackendOptions", str | None]:
        """Settle choices that depend on the model (e.g. which server to start), before any data or model is
        loaded; and a one-line note for the user, if any. `hint`: the alternative an error may suggest."""
        return self, None

    def computes_here(self) -> bool:
        """Whether this arm computes on this machine's CPU or GPU (two such arms are not run at the same time)."""
        return False

    @classmethod
    def default_label(cls, text: str, written: Mapping[str, str]) -> str:
        """What reports call an arm of this backend that has no `label=`: the spec as written."""
        return text


def _members(hint: Any) -> tuple[Any, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _example(kinds: list[Any]) -> str:
    return {int: "4", float: "1.5", bool: "true"}.get(kinds[0] if kinds else str, "VALUE")


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def choice(value: str, valid: tuple[str, ...], what: str, suffix: str = "", flag: str = "") -> None:
    """`value` is one of `valid`, else a one-line error with the closest spelling (and the flag that sets it)."""
    if value not in valid:
        import difflib

        close = difflib.get_close_matches(str(value), list(valid), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown {what} {value!r}{suffix}",
                         f"{hint}{flag + ' takes' if flag else 'use'} one of: {', '.join(valid)}")


MAX_TOP_LOGPROBS = 20  # OpenAI's limit on top_logprobs, which servers copy


def check_logprobs(value: int | None, suffix: str = "") -> None:
    """An arm's `logprobs=K`: None (not asked) or 0 to MAX_TOP_LOGPROBS alternatives per token."""
    if value is not None and not 0 <= value <= MAX_TOP_LOGPROBS:
        raise UsageError(f"logprobs must be 0 to {MAX_TOP_LOGPROBS} (got {value}){suffix}",
                         "e.g. logprobs=5 (the top 5 alternatives of each token)")


__all__ = ["BackendOptions", "MAX_TOP_LOGPROBS", "check_logprobs", "choice", "option"]
