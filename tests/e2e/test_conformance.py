"""The conformance table (issue 22, item 6): one ranked line per arm, in summary.json, on the console and in
report.html, from a run against loopback servers that answer the way providers do — one faithful, one that refuses
`seed` with Groq's 400 (OpenAI's `error.param`), one that refuses `reasoning_effort` with `transformers serve`'s own
422 text and cuts one answer off, one that answers every label the other way.

Expected values are counted by hand from the scripts below, never read off toxcmp's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from toxcmp.backends import BackendConfig
from toxcmp.config import GenerationConfig
from toxcmp.report.console import render_report
from toxcmp.run.config import CompareConfig
from toxcmp.run.orchestrate import run_compare
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion

N = 12
MODEL_ID = "openai/gpt-oss-20b"
TRUNCATED_ROW = 5  # the reasoning-effort refuser runs out of tokens on this row
WRONG_ON = {2, 7}  # ... and answers these two the other way


def _row(payload) -> int:
    return int(payload["messages"][-1]["content"].split()[1])


def _label(i: int) -> str:
    return str(i % 2)


def _flip(label: str) -> str:
    return "0" if label == "1" else "1"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("conformance") / "rows.csv"
    pl.DataFrame({"conv_id": [f"r{i:02d}" for i in range(N)], "user_input": [f"message {i} hello" for i in range(N)],
                  "toxicity": [i % 2 for i in range(N)]}).write_csv(path)
    return path


def faithful(payload) -> Reply:
    """Groq-style: the reasoning in its own field, four times as long at high effort as at low."""
    words = {"low": 5, "high": 20}[payload.get("reasoning_effort", "low")]
    return Reply(body=completion(_label(_row(payload)), reasoning=" ".join(["thinking"] * words)))


def refuses(name: str, status: int, body: dict, answer):
    """A server that refuses requests carrying `name` with `status` + `body`, and answers the rest with `answer`."""
    def respond(payload) -> Reply:
        return Reply(status=status, body=body) if name in payload else answer(payload)
    return respond


GROQ_400 = {"error": {"message": "`seed` is not supported with this model", "type": "invalid_request_error",
                      "param": "seed"}}
# what transformers serve's `_validate_request` raises for a field outside its request schema (FastAPI's body)
TRANSFORMERS_422 = {"detail": "Unexpected fields in the request: {'reasoning_effort'}"}


def no_effort(payload) -> Reply:
    i = _row(payload)
    if i == TRUNCATED_ROW:
        return Reply(body=completion("", reasoning="The user says", finish_reason="length"))
    label = _flip(_label(i)) if i in WRONG_ON else _label(i)
    return Reply(body=completion(label, reasoning="short"))


def wrong(payload) -> Reply:
    return Reply(body=completion(_flip(_label(_row(payload))), reasoning="thinking about it"))


@pytest.fixture(scope="module")
def run(dataset):
    with FakeChatServer(models=[MODEL_ID], responder=faithful) as ref, \
            FakeChatServer(models=[MODEL_ID], responder=faithful) as good, \
            FakeChatServer(models=[MODEL_ID], responder=refuses("seed", 400, GROQ_400, faithful)) as seedless, \
            FakeChatServer(models=[MODEL_ID],
                           responder=refuses("reasoning_effort", 422, TRANSFORMERS_422, no_effort)) as effortless, \
            FakeChatServer(models=[MODEL_ID], responder=wrong) as flipped:
        arms = [f"api[base_url={ref.base_url};label=ref]",
                f"api[base_url={flipped.base_url};label=wrong]",
                f"api[base_url={effortless.base_url};label=no_effort]",
                f"api[base_url={seedless.base_url};label=seedless]",
                f"api[base_url={good.base_url};label=good]",
                f"api[base_url={good.base_url};label=good_high;reasoning_effort=high]"]
        cfg = CompareConfig(model="gpt-oss-20b", dataset=str(dataset), output_dir=dataset.parent / "out", margins=False,
                            generation=GenerationConfig(reasoning_effort="low"), backends=",".join(arms),
                            backend=BackendConfig(concurrency=2))
        result = run_compare(cfg)
        servers = {"seedless": seedless, "no_effort": effortless}
        yield result, {k: list(s.requests) for k, s in servers.items()}


def test_the_ranked_table_answers_which_arm_to_trust(run):
    result, _ = run
    assert result.status == "complete"
    conf = json.loads((result.run_dir / "summary.json").read_text())["conformance"]
    ranked = {line["arm"]: line for line in conf["ranked"]}
    # the faithful pair first (12 rows cannot show equivalence within 2 points: inconclusive, no finding), then
    # the one not served as asked but agreeing, then the two whose label comparison fails (9/12 and 0/12 agree
    # against the 95 % threshold), the one with more agreement first
    assert [line["arm"] for line in conf["ranked"]] == ["good", "good_high", "seedless", "no_effort", "wrong"]
    assert [line["standing"] for line in conf["ranked"]] == ["inconclusive", "inconclusive", "suspect",
                                                             "not faithful", "not faithful"]
    assert conf["reference"]["arm"] == "ref" and conf["reference"]["standing"] == "reference"
    assert ranked["good"]["findings"] == [] and ranked["good"]["reasoning_effort"] == "honoured"
    assert ranked["good_high"]["reasoning_effort"] == "honoured"

    seedless = ranked["seedless"]
    assert seedless["rejected_parameters"] == {"seed": N}
    assert seedless["findings"] == [f"the server refused seed on {N}/{N} rows: answered without it"]
    assert seedless["agreement"]["successes"] == N and seedless["reasoning_source"] == {"field:reasoning": N}

    effortless = ranked["no_effort"]
    assert effortless["rejected_parameters"] == {"reasoning_effort": N}
    assert effortless["reasoning_effort"] == "rejected"
    assert effortless["finish_reason"] == {"length": 1, "stop": N - 1}
    assert (effortless["truncated"]["successes"], effortless["truncated"]["n"]) == (1, N)
    assert effortless["empty_final"]["successes"] == 0  # the cut-off answer is a truncation, not an empty one
    # agreement: the truncated row has no label (no_label ≠ the reference's label), two answered the other way
    assert effortless["agreement"]["successes"] == N - 1 - len(WRONG_ON)
    assert effortless["findings"][:2] == [
        f"the server refused reasoning_effort on {N}/{N} rows: the reasoning effort asked for was not applied",
        f"1/{N} cut off by the token budget (raise --max-new-tokens)"]

    flipped = ranked["wrong"]
    assert flipped["agreement"]["successes"] == 0 and flipped["equivalence"] == "different"
    # the loopback servers say nothing of their engine: a note on every line, never a finding
    assert all(line["notes"] == [line["notes"][0]] and "engine behind its URL is not known" in line["notes"][0]
               for line in [*conf["ranked"], conf["reference"]])


def test_a_refused_parameter_is_asked_again_once_then_never_sent(run):
    _, requests = run
    with_seed = [r for r in requests["seedless"] if "seed" in r]
    # the requests already in flight when the first refusal came back (2 slots) carried it; none sent after did
    assert 1 <= len(with_seed) <= 2 and requests["seedless"][0] is with_seed[0]
    assert len(requests["seedless"]) == N + len(with_seed)  # each refused request was sent once more
    # the server logs arrival order, not send order (a request sent before the refusal may arrive after a retry):
    # per row, a seeded request is one of those in flight, and each row has exactly one request without it
    for row in range(N):
        sent = [r for r in requests["seedless"] if _row(r) == row]
        seeded = [r for r in sent if "seed" in r]
        assert len(sent) == 1 + len(seeded) and len(seeded) <= 1, (row, sent)
    assert all(r.get("reasoning_effort") == "low" for r in requests["seedless"])  # nothing else dropped
    assert 1 <= sum("reasoning_effort" in r for r in requests["no_effort"]) <= 2
    assert all(r.get("seed") == 0 for r in requests["no_effort"])  # only the parameter it refused is dropped


def test_the_rows_name_what_was_not_sent_and_the_provenance_what_was_said(run):
    result, _ = run
    tidy = pl.read_parquet(result.run_dir / "results.parquet")
    by_arm = dict(tidy.group_by("arm").agg(pl.col("rejected_parameters").unique()).iter_rows())
    assert by_arm["seedless"] == ["seed"] and by_arm["no_effort"] == ["reasoning_effort"]
    assert by_arm["good"] == [None] and by_arm["ref"] == [None]
    refusals = result.summary["metadata"]["reliability"]["no_effort"]["rejected_parameters"]
    assert list(refusals) == ["reasoning_effort"] and "HTTP 422" in refusals["reasoning_effort"]


def test_console_and_page_show_the_table(run):
    result, _ = run
    console = Console(record=True, width=250)
    render_report(result.summary, console)
    text = console.export_text()
    assert "conformance, ranked: which arm to trust" in text
    assert "trust first: good (inconclusive; no finding against it) · inconclusive: good, good_high · " in text
    assert "seedless: the server refused seed on 12/12 rows: answered without it" in text
    page = (result.run_dir / "report.html").read_text()
    assert 'id="conformance"' in page and "trust first: good (inconclusive; no finding against it)" in page
    assert "the server refused seed on 12/12 rows" in page


def test_the_page_shows_the_ranked_table_in_a_browser(run):
    from tests.helpers.browser import start_browser

    result, _ = run
    driver = start_browser()
    try:
        driver.get((result.run_dir / "report.html").resolve().as_uri())
        driver.implicitly_wait(5)
        assert driver.find_element("css selector", "body[data-ready='1']")
        table = driver.find_element("css selector", "table.conformance")
        assert table.is_displayed()
        rows = [[td.text for td in tr.find_elements("css selector", "td")]
                for tr in table.find_elements("css selector", "tbody tr")]
        assert [r[:3] for r in rows] == [["1", "good", "inconclusive"], ["2", "good_high", "inconclusive"],
                                         ["3", "seedless", "suspect"], ["4", "no_effort", "not faithful"],
                                         ["5", "wrong", "not faithful"], ["ref", "ref", "reference"]]
        assert rows[2][10] == "seed (12 rows)" and rows[3][11] == "low: rejected"
        assert driver.find_element("css selector", "p.lead").text.startswith("trust first: good")
    finally:
        driver.quit()
