"""analysis.conformance on hand-built rows: the standings, the ranking and the findings, counted by hand."""

from __future__ import annotations

from toxcmp.analysis.conformance import conformance, effort_status, is_empty_final, is_truncated, rejected_counts


def _rows(n: int, **fields) -> list[dict]:
    return [dict({"content": "1", "finish_reason": "stop", "reasoning_source": "field:reasoning"}, **fields)
            for _ in range(n)]


def _comparison(agree: int, n: int, equivalence: str, verdict: str = "pass") -> dict:
    return {"binary_agreement": {"value": agree / n, "low": agree / n - 0.1, "high": 1.0, "successes": agree, "n": n},
            "equivalence": {"verdict": equivalence}, "verdict": verdict}


def _shape(rows):
    counts: dict = {}
    for r in rows:
        counts[r["reasoning_source"]] = counts.get(r["reasoning_source"], 0) + 1
    return {"reasoning_source": counts, "finish_reason": {"stop": len(rows)}}


def test_standings_rank_and_findings():
    first = {"ref": _rows(10), "close": _rows(10), "same": _rows(10), "refuses": _rows(10, rejected_parameters="seed"),
             "cut": _rows(9) + _rows(1, content="", finish_reason="length"), "other": _rows(10)}
    comparisons = {"close": _comparison(9, 10, "inconclusive"), "same": _comparison(10, 10, "equivalent"),
                   "refuses": _comparison(10, 10, "equivalent"), "cut": _comparison(9, 10, "inconclusive"),
                   "other": _comparison(2, 10, "different", "fail")}
    arms = [{"label": k} for k in first]
    out = conformance(arms, "ref", first, comparisons, {}, {k: _shape(v) for k, v in first.items()}, [], {})
    # equivalent with no finding first; then inconclusive without findings; then the two with findings by agreement
    assert [x["arm"] for x in out["ranked"]] == ["same", "close", "refuses", "cut", "other"]
    assert [x["standing"] for x in out["ranked"]] == ["faithful", "inconclusive", "suspect", "suspect", "not faithful"]
    assert [x["rank"] for x in out["ranked"]] == [1, 2, 3, 4, 5]
    by = {x["arm"]: x for x in out["ranked"]}
    assert by["refuses"]["findings"] == ["the server refused seed on 10/10 rows: answered without it"]
    assert by["cut"]["findings"] == ["1/10 cut off by the token budget (raise --max-new-tokens)"]
    assert by["cut"]["empty_final"]["successes"] == 0 and by["cut"]["truncated"]["successes"] == 1
    assert out["reference"]["arm"] == "ref" and out["reference"]["standing"] == "reference"


def test_errors_mixed_shapes_and_prompt_tokens_are_findings():
    rows = _rows(3) + _rows(1, reasoning_source="harmony") + [{"error": "HTTP 500", "content": ""}]
    parity = {"arm": {"equal": {"successes": 2, "n": 4}, "variants": {"explained_by": {"date": 2},
                                                                      "titles": {"date": "another date line"}}}}
    out = conformance([{"label": "ref"}, {"label": "arm"}], "ref", {"ref": _rows(5), "arm": rows},
                      {"arm": _comparison(4, 4, "inconclusive")}, {},
                      {"arm": {"reasoning_source": {"field:reasoning": 3, "harmony": 1}}}, [], parity)
    line = out["ranked"][0]
    assert line["findings"] == ["1/5 requests failed",
                                "reasoning arrived in 2 shapes (field:reasoning 3, harmony 1)",
                                "prompt tokens differ from toxcmp's render on 2/4 rows (another date line: 2)"]
    assert line["standing"] == "suspect" and line["answered"] == 4


def test_reasoning_effort_status():
    checks = [{"arms": ["a", "b"], "flag": None}, {"arms": ["c", "d"], "flag": "reasoning_effort ignored"}]
    assert effort_status({"label": "a", "reasoning_effort": "low"}, checks, {}) == "honoured"
    assert effort_status({"label": "c", "reasoning_effort": "low"}, checks, {}) == "ignored"
    assert effort_status({"label": "e", "reasoning_effort": "low"}, checks, {}) == "not tested"
    assert effort_status({"label": "a", "reasoning_effort": "low"}, checks, {"reasoning_effort": 3}) == "rejected"
    assert effort_status({"label": "a"}, checks, {}) is None  # asked for none: nothing to honour


def test_row_facts():
    assert is_truncated({"finish_reason": "length"}) and is_truncated({"parse_failure": "truncated"})
    assert is_empty_final({"content": "  "}) and not is_empty_final({"content": "", "finish_reason": "length"})
    assert rejected_counts([{"rejected_parameters": "seed,top_p"}, {"rejected_parameters": "seed"}, {}]) == {
        "seed": 2, "top_p": 1}
