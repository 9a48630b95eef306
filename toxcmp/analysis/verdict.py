"""The run's verdict: one small rule, kept apart so it can be read and tested on its own.

- `incomplete`   the run stopped early (interrupted, or a backend failed) or some rows have a backend error:
                 nothing is claimed.
- `inconclusive` too few labels to judge label agreement: either side gave a parseable label on fewer than
                 `min_labelled` of the scored rows (default half), or no row has a label on both sides. Two
                 backends that both fail to classify "agree" on nothing; their text may still be identical,
                 which `content_identical` reports separately.
- `pass`         binary agreement ≥ threshold.
- `fail`         binary agreement < threshold.

Labels forced by `--unparsed-as` do not count as labels here: a side's labelled share is its parse rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from toxcmp.errors import ExitCode

VERDICTS = ("pass", "fail", "inconclusive", "incomplete")
DEFAULT_MIN_LABELLED = 0.5
EXIT_CODES = {"pass": ExitCode.OK, "fail": ExitCode.FAIL, "inconclusive": ExitCode.INCONCLUSIVE,
              "incomplete": ExitCode.BACKEND}


@dataclass(frozen=True)
class RunVerdict:
    verdict: str
    reason: str

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


@dataclass(frozen=True)
class SideLabels:
    label: str
    labelled: int  # rows where this side's answer parsed into a label
    scored: int  # rows where this side answered (no backend error)


def decide(agreement: float | None, threshold: float, sides: list[SideLabels], n_both_labelled: int,
           status: str = "complete", min_labelled: float = DEFAULT_MIN_LABELLED, n_errors: int = 0) -> RunVerdict:
    """pass / fail / inconclusive / incomplete, with the one-line reason a person reads."""
    rates = ", ".join(f"{s.label} {_share(s)}" for s in sides)
    if status != "complete":
        return RunVerdict("incomplete", f"the run is {status}; rerun the same command to resume (parse rates so far: {rates})")
    if n_errors:
        return RunVerdict("incomplete", f"{n_errors} row(s) have no answer from a backend (errors are not cached); "
                                        f"rerun the same command to retry them (parse rates: {rates})")
    short = [s for s in sides if s.scored == 0 or s.labelled / s.scored < min_labelled]
    if short or n_both_labelled == 0:
        return RunVerdict("inconclusive",
                          f"too few labels to judge agreement (parse rate {rates}; need ≥ {min_labelled:.0%} on each "
                          f"side, {n_both_labelled} row(s) labelled by both) — try a model that follows the policy, "
                          "a larger --max-new-tokens, or another --policy")
    if agreement is None:
        return RunVerdict("inconclusive", "no row could be scored")
    if agreement >= threshold:
        return RunVerdict("pass", f"binary agreement {agreement:.1%} ≥ threshold {threshold:.0%} "
                                  f"(parse rate {rates})")
    return RunVerdict("fail", f"binary agreement {agreement:.1%} < threshold {threshold:.0%} (parse rate {rates})")


def _share(side: SideLabels) -> str:
    return f"{side.labelled}/{side.scored}" + (f" = {side.labelled / side.scored:.0%}" if side.scored else "")
