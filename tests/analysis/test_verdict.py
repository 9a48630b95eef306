"""The verdict rule (toxcmp/verdict.py) and how summaries and reports carry it."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from toxcmp.domain.policies import load_policy
from toxcmp.report.console import render_report
from toxcmp.analysis.scoring import derive, summarize
from toxcmp.analysis.verdict import EXIT_CODES, SideLabels, decide

SIMPLE = load_policy("toxic_simple")


def _sides(a: tuple[int, int], b: tuple[int, int]) -> list[SideLabels]:
    return [SideLabels("api", *a), SideLabels("local", *b)]


@pytest.mark.parametrize("agreement,sides,both,status,errors,expected", [
    (1.0, _sides((0, 24), (0, 24)), 0, "complete", 0, "inconclusive"),   # the bundled-model demo: no labels at all
    (1.0, _sides((24, 24), (11, 24)), 11, "complete", 0, "inconclusive"),  # one side labels under half
    (0.96, _sides((12, 24), (12, 24)), 12, "complete", 0, "pass"),     # exactly half on each side is enough
    (0.96, _sides((12, 24), (12, 24)), 0, "complete", 0, "inconclusive"),  # ...but not when no row has both
    (0.96, _sides((50, 50), (49, 50)), 49, "complete", 0, "pass"),
    (0.94, _sides((50, 50), (49, 50)), 49, "complete", 0, "fail"),
    (1.0, _sides((8, 8), (8, 8)), 8, "interrupted", 0, "incomplete"),
    (1.0, _sides((8, 8), (8, 8)), 8, "complete", 1, "incomplete"),
    (None, _sides((0, 0), (0, 0)), 0, "complete", 0, "inconclusive"),
])
def test_decide(agreement, sides, both, status, errors, expected):
    verdict = decide(agreement, 0.95, sides, both, status, n_errors=errors)
    assert verdict.verdict == expected
    assert verdict.passed is (expected == "pass")


def test_inconclusive_names_both_parse_rates_and_what_to_try():
    reason = decide(1.0, 0.95, _sides((0, 24), (3, 24)), 0).reason
    assert "api 0/24" in reason and "local 3/24" in reason
    assert "--max-new-tokens" in reason and "--policy" in reason and "follows the policy" in reason


def test_min_labelled_is_a_knob():
    sides = _sides((6, 24), (6, 24))
    assert decide(1.0, 0.95, sides, 6).verdict == "inconclusive"
    assert decide(1.0, 0.95, sides, 6, min_labelled=0.25).verdict == "pass"


def test_exit_codes_are_distinct():
    assert EXIT_CODES == {"pass": 0, "fail": 1, "inconclusive": 3, "incomplete": 4}


def _row(i: int, a: str, b: str, truth: int = 0, raw: bool = True) -> dict:
    row = {"example_id": f"e{i}", "text": "t", "toxicity": truth, "jailbreaking": 0, "weight": 1.0}
    for p, text in (("a", a), ("b", b)):
        row |= {f"{p}_raw": text if raw else None, f"{p}_content": text, f"{p}_reasoning": "", f"{p}_latency_s": 0.1,
                f"{p}_cached": False, f"{p}_error": None, f"{p}_served_by": p, f"{p}_prompt_hash": "h",
                f"{p}_finish_reason": "stop", f"{p}_retries": 0}
    return row


def test_forced_labels_do_not_make_a_run_conclusive():
    """`--unparsed-as 0` turns every unparsed answer into 0: agreement is 100 %, yet nothing was classified."""
    texts = ["1"] * 3 + ["Sure! Here is a poem about cats."] * 7  # 3 real labels, 7 forced to 0
    rows = [derive(_row(i, t, t), SIMPLE, False, "0") for i, t in enumerate(texts)]
    assert all(r["a_binary"] is not None and r["binary_match"] for r in rows)
    summary = summarize(rows, ["api", "local"], kappa_resamples=50)
    assert summary["verdict"] == "inconclusive" and summary["passed"] is False


def test_text_identity_is_reported_beside_label_agreement():
    texts = [("1", "1"), ("0", "0"), ("1", "1 "), ("0", "0"), ("Sure, a poem", "Sure, a poem!")]
    rows = [derive(_row(i, a, b), SIMPLE, False) for i, (a, b) in enumerate(texts)]
    summary = summarize(rows, ["api", "local"], kappa_resamples=50)
    # hand count: rows 0, 1 and 3 are byte-identical; row 2 differs by a space, row 4 by '!'
    assert (summary["content_identical"]["successes"], summary["content_identical"]["n"]) == (3, 5)
    assert (summary["raw_identical"]["successes"], summary["raw_identical"]["n"]) == (3, 5)
    # no raw text recorded (a study file): raw identity is undefined, not "identical"
    rows = [derive(_row(i, a, b, raw=False), SIMPLE, False) for i, (a, b) in enumerate(texts)]
    summary = summarize(rows, ["api", "local"], kappa_resamples=50)
    assert summary["raw_identical"]["n"] == 0 and summary["raw_identical"]["value"] is None


def test_report_states_the_verdict_first_and_last():
    rows = [derive(_row(i, "Hello!", "Hello!"), SIMPLE, False) for i in range(6)]
    summary = summarize(rows, ["api", "local"], kappa_resamples=50)
    buffer = io.StringIO()
    render_report(summary, Console(file=buffer, width=100))
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    assert lines[0].startswith("INCONCLUSIVE: too few labels") and lines[-1].startswith("INCONCLUSIVE")
    assert "PASS" not in buffer.getvalue()
