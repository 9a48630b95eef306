"""The run's verdict: one small rule, kept apart so it can be read and tested on its own.

- `incomplete`   the run stopped early (interrupted, or a backend failed) or some rows have a backend error:
                 nothing is claimed.
- `inconclusive` too few labels to judge label agreement: either side gave a parseable label on fewer than
                 `min_labelled` of the scored rows (default half), or no row has a label on both sides. Two
                 backends that both fail to classify "agree" on nothing; their text may still be identical,
                 which `content_identical` reports separately. Also when no scored row has a human label
                 (`NO_LABELLED_ROWS`): the arms can still be compared with each other, but nothing says
                 either is right, and a run without labels is never a pass.
- `pass`         binary agreement ≥ threshold.
- `fail`         binary agreement < threshold.

Labels forced by `--unparsed-as` do not count as labels here: a side's labelled share is its parse rate.

One arm (`decide_evaluation`) is an evaluation: the human labels are its reference, and its binary agreement with
them is its accuracy (no label counts as wrong), judged by the same threshold and the same labelled-share rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from toxcmp.errors import ExitCode

VERDICTS = ("pass", "fail", "inconclusive", "incomplete")
# the headline when no row has a human label (the rows' truth is missing)
NO_LABELLED_ROWS = "no labelled rows: agreement between arms only; accuracy, precision, recall, F1 undefined"
# the headline when no row has a label from both arms: "agreement" is then two answers without a label
NO_BOTH_LABELLED = ("no row labelled by both arms: binary agreement here counts two answers without a label as "
                    "agreeing, not two labels")
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
           status: str = "complete", min_labelled: float = DEFAULT_MIN_LABELLED, n_errors: int = 0,
           n_labelled: int | None = None) -> RunVerdict:
    """pass / fail / inconclusive / incomplete, with the one-line reason a person reads. `n_labelled`: scored rows
    with a human label (None: not counted, as before)."""
    rates = ", ".join(f"{s.label} {_share(s)}" for s in sides)
    if status != "complete":
        return RunVerdict("incomplete", f"the run is {status}; rerun the same command to resume (parse rates so far: {rates})")
    if n_errors:
        return RunVerdict("incomplete", f"{n_errors} row(s) have no answer from a backend (errors are not cached); "
                                        f"rerun the same command to retry them (parse rates: {rates})")
    short = [s for s in sides if s.scored == 0 or s.labelled / s.scored < min_labelled]
    if short or n_both_labelled == 0:
        notes = [NO_BOTH_LABELLED] if n_both_labelled == 0 and agreement is not None else []
        notes += [NO_LABELLED_ROWS] if n_labelled == 0 else []
        return RunVerdict("inconclusive",
                          f"too few labels to judge agreement (parse rate {rates}; need ≥ {min_labelled:.0%} on each "
                          f"side, {n_both_labelled} row(s) labelled by both) — try a model that follows the policy, "
                          "a larger --max-new-tokens, or another --policy" + "".join(f"; {n}" for n in notes))
    if n_labelled == 0:
        shown = "" if agreement is None else f"binary agreement between the arms {agreement:.1%}; "
        return RunVerdict("inconclusive", f"{NO_LABELLED_ROWS} ({shown}parse rate {rates})")
    if agreement is None:
        return RunVerdict("inconclusive", "no row could be scored")
    if agreement >= threshold:
        return RunVerdict("pass", f"binary agreement {agreement:.1%} ≥ threshold {threshold:.0%} "
                                  f"(parse rate {rates})")
    return RunVerdict("fail", f"binary agreement {agreement:.1%} < threshold {threshold:.0%} (parse rate {rates})")


def decide_evaluation(accuracy: float | None, threshold: float, side: SideLabels, n_labelled: int,
                      status: str = "complete", min_labelled: float = DEFAULT_MIN_LABELLED,
                      n_errors: int = 0) -> RunVerdict:
    """One arm against the human labels: `decide` with the labels as the reference arm, so that the agreement is
    the arm's accuracy (a row without a label from the arm is a disagreement)."""
    rate = f"{side.label} {_share(side)}"
    if status != "complete":
        return RunVerdict("incomplete", f"the run is {status}; rerun the same command to resume (parse rate so far: {rate})")
    if n_errors:
        return RunVerdict("incomplete", f"{n_errors} row(s) have no answer from {side.label} (errors are not cached); "
                                        f"rerun the same command to retry them (parse rate: {rate})")
    if n_labelled == 0:
        return RunVerdict("inconclusive", f"no labelled rows: nothing to evaluate {side.label} against; accuracy, "
                                          f"precision, recall, F1 undefined (parse rate {rate})")
    if side.scored == 0 or side.labelled / side.scored < min_labelled:
        return RunVerdict("inconclusive",
                          f"too few labels to evaluate (parse rate {rate}; need ≥ {min_labelled:.0%}) — try a model "
                          "that follows the policy, a larger --max-new-tokens, or another --policy")
    if accuracy is None:
        return RunVerdict("inconclusive", "no row could be scored")
    verb = "≥" if accuracy >= threshold else "<"
    return RunVerdict("pass" if accuracy >= threshold else "fail",
                      f"accuracy against the human labels {accuracy:.1%} {verb} threshold {threshold:.0%} "
                      f"({n_labelled} labelled rows; parse rate {rate})")


def _share(side: SideLabels) -> str:
    return f"{side.labelled}/{side.scored}" + (f" = {side.labelled / side.scored:.0%}" if side.scored else "")
