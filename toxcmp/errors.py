"""Domain errors: each carries a one-line message and a hint that says what to do next; and the exit codes."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every command's exit status, one table (README "Exit codes")."""

    OK = 0  # pass; classify gave an answer; every check passed
    FAIL = 1  # compare/rescore: agreement below --threshold; verify-setup: a required check failed; bench: outputs differ
    USAGE = 2  # bad input or options: nothing ran (or nothing more than the checks)
    INCONCLUSIVE = 3  # compare/rescore: too few labels to judge agreement
    BACKEND = 4  # a backend, server or the disk failed; finished rows are kept — rerun the same command to resume
    INTERRUPTED = 130  # Ctrl-C (or a declined start: nothing ran); finished rows are kept


class ToxcmpError(Exception):
    """Base for errors the CLI turns into one line and a non-zero exit code."""

    exit_code = ExitCode.BACKEND

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} — {self.hint}"
        return " ".join(text.split())


class Declined(ToxcmpError):
    """The user said no to a run's plan: nothing was sent or written. Exit 130, as a Ctrl-C before the start, so a
    script chaining on `compare`'s 0 (pass) never reads a declined run as a pass."""

    exit_code = ExitCode.INTERRUPTED


class UsageError(ToxcmpError):
    """Bad input from the user: options, texts, files."""

    exit_code = ExitCode.USAGE


class UnknownNameError(UsageError):
    """A name (policy, backend, model, provider) that is not registered; lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: list[str], extra_hint: str | None = None):
        import difflib

        close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
        plural = {"policy": "policies"}.get(kind, f"{kind}s")
        hint = (f"did you mean {close[0]!r}? " if close else "") + f"valid {plural}: {', '.join(sorted(valid)) or '(none)'}"
        if extra_hint:
            hint = f"{hint}; {extra_hint}"
        super().__init__(f"unknown {kind} {name!r}", hint)
        self.valid = sorted(valid)


class PolicyError(UsageError):
    """A policy file that cannot be read or lacks required parts."""


class BackendError(ToxcmpError):
    """A backend could not be created or could not run at all (not a per-example failure)."""


class ContextLengthError(UsageError):
    """The rendered prompt does not fit the model's context window."""
