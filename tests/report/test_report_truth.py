"""Every number on the page is true (issue 23), read in a real headless Chromium: one filter chip per category,
counting what its name says and what the text says; no binary label passed off as a fine-grained category; an
incomplete run says how many rows it planned; recorded latencies shown as recorded (or as absent), never blank
or 0 s.

Expected values come from the study file's columns, pairs.parquet counted with polars, or hand counts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from toxcmp.analysis.scoring import derive, summarize
from toxcmp.cli.app import app
from toxcmp.domain.policies import load_policy
from toxcmp.report.html import build_html
from toxcmp.run.config import CompareConfig
from toxcmp.run.orchestrate import run_compare

from tests.helpers import doubles
from tests.report.test_html_report import N50, _open, browser, n50_run  # noqa: F401 - fixtures
from tests.run.test_compare import plugin_backends  # noqa: F401 - the rule/quirky entry points, autouse


def _chips(browser) -> dict[str, int]:
    """The filter chips as shown: name → count."""
    shown = [b.text for b in browser.find_elements("css selector", "#filters button")]
    parsed = [re.fullmatch(r"(.+) \((\d+)\)", text) for text in shown]
    assert all(parsed), shown
    names = [m.group(1) for m in parsed]
    assert len({n.lower() for n in names}) == len(names), f"a category under two spellings: {shown}"
    return {m.group(1): int(m.group(2)) for m in parsed}


def _either(pairs: pl.DataFrame, expr) -> int:
    return pairs.filter(expr("a") | expr("b")).height


def test_one_chip_per_category_counting_what_its_name_says(browser, n50_run):
    pairs = pl.read_parquet(n50_run / "pairs.parquet")
    _open(browser, n50_run / "report.html")
    no_label = lambda p: pl.col(f"{p}_binary").is_null() & ~pl.col(f"{p}_refusal") & pl.col(f"{p}_error").is_null()  # noqa: E731
    assert _chips(browser) == {
        "All": 50, "Disagree": pairs.filter(pl.col("cause").is_not_null()).height,
        "Refusal": _either(pairs, lambda p: pl.col(f"{p}_refusal")), "Parse failure": _either(pairs, no_label),
        "Error": _either(pairs, lambda p: pl.col(f"{p}_error").is_not_null()),
        "label_flip": pairs.filter(pl.col("cause") == "label_flip").height,
        "fine_grain_only": pairs.filter(pl.col("cause") == "fine_grain_only").height,
    }  # and no near-tie chip: nothing here was scored by a local model


HARMONY = "<|channel|>analysis<|message|>{}<|end|><|start|>assistant<|channel|>final<|message|>{}"
# by hand: (reasoning, label) of each side, then what the local model found where the texts part and at the label
NEAR_TIE_ROWS = [
    (("I think", "0"), ("I guess", "0"), "near_tie", None),
    (("plain", "0"), ("plainly", "0"), "near_tie", None),
    (("calm", "0"), ("storm", "0"), "real", None),
    (("x", "1"), ("x", "0"), "real", "near_tie"),  # a label flip, its label a near tie
    (("same", "0"), ("same", "0"), None, None),  # texts identical: nothing to score
]


def _near_tie_page(tmp_path: Path) -> Path:
    policy = load_policy("toxic_simple")
    rows = []
    for i, (a, b, parting, label) in enumerate(NEAR_TIE_ROWS):
        row = {"example_id": f"e{i}", "text": f"text {i}", "toxicity": 0, "weight": 1.0}
        for p, (reasoning, answer) in (("a", a), ("b", b)):
            row |= {f"{p}_raw": HARMONY.format(reasoning, answer), f"{p}_content": answer, f"{p}_reasoning": reasoning,
                    f"{p}_latency_s": 0.1, f"{p}_cached": False, f"{p}_error": None, f"{p}_backend": p.upper()}
        row = derive(row, policy, True)
        if parting:  # what add_divergences writes
            row |= {"divergence_kind": parting, "diverge_token": 3}
        if label:  # what add_margins writes
            row |= {"margin_nats": 0.4, "margin_kind": label}
        rows.append(row)
    page = tmp_path / "report.html"
    page.write_text(build_html(rows, summarize(rows, ["A", "B"], kappa_resamples=20)), encoding="utf-8")
    return page


def test_near_tie_chips_count_the_near_ties_the_page_names(browser, tmp_path):
    _open(browser, _near_tie_page(tmp_path))
    chips = _chips(browser)
    text = browser.find_element("tag name", "body").text
    assert chips["Near tie at the parting"] == 2 and "local model at the parting: 2 near tie(s), 2 real" in text
    assert chips["Near tie at the label"] == 1 and "local model at the label: 1 near tie(s)" in text
    browser.find_element("css selector", "#filters button[data-filter='Near tie at the parting']").click()
    shown = [e.get_attribute("title") for e in browser.find_elements("css selector", "#rows tr.row td:nth-child(2)")]
    assert shown == ["e0", "e1"]


def _matrix_cells(table) -> list[list[str]]:
    return [[c.text for c in tr.find_elements("css selector", "th, td")] for tr in table.find_elements("css selector", "tr")]


def test_a_json_policys_bare_label_is_not_shown_as_a_category(browser, n50_run):
    """toxic_chat_claude_1 answers in JSON with a category (none, hate, …); the study's recorded answers are a
    bare 0 or 1. A 0 is `none` (the only safe category); a 1 names no category, and the page says so."""
    study = pl.read_parquet(N50)
    categories = load_policy("toxic_chat_claude_1").fine_grained_labels
    assert "1" not in categories and "none" in categories
    _open(browser, n50_run / "report.html")
    fine = browser.find_elements("css selector", "section.comparison.matrices table.matrix")[1]
    cells = _matrix_cells(fine)
    assert cells[0] == ["A ↓ / B →", "none", "1 (no category)", "refusal"]
    both_bare_1 = study.filter((pl.col("api_response") == "1") & (pl.col("local_response") == "1")).height
    assert cells[2][:3] == ["1 (no category)", "1", str(both_bare_1)]  # none → 1 once (the Walmart flip)


@pytest.fixture
def twelve_rows(tmp_path) -> Path:
    path = tmp_path / "rows.csv"
    pl.DataFrame({"conv_id": [f"id{i:02d}" for i in range(12)], "user_input": [f"text {i}" for i in range(12)],
                  "toxicity": [0] * 12}).write_csv(path)
    return path


def test_an_interrupted_run_says_how_many_rows_it_planned(browser, twelve_rows, tmp_path):
    doubles.QuirkyBackend.interrupt_at = 7  # Ctrl-C in the second chunk
    cfg = CompareConfig(backends="rule,quirky", dataset=str(twelve_rows), output_dir=tmp_path / "out", chunk_size=4)
    result = run_compare(cfg)
    assert result.status == "interrupted"
    finished = pl.read_parquet(result.run_dir / "pairs.parquet").height
    planned = pl.read_csv(twelve_rows).height
    _open(browser, result.run_dir / "report.html")
    headline = browser.find_element("css selector", "body > p.muted").text
    assert f" · n = {finished} of {planned} planned (interrupted) · " in headline and finished < planned, headline


def _figure(browser, caption_start: str):
    for figure in browser.find_elements("css selector", "div.charts figure"):
        if figure.find_element("tag name", "figcaption").text.startswith(caption_start):
            return figure
    raise AssertionError(f"no figure captioned {caption_start!r}")


def _stat(browser, name: str) -> list[str]:
    for tr in browser.find_elements("css selector", "table.stats tr"):
        cells = [c.text for c in tr.find_elements("css selector", "td")]
        if cells and cells[0] == name:
            return cells[1:]
    raise AssertionError(f"no statistic {name!r}")


def _first_detail_latencies(browser) -> list[str]:
    browser.find_element("css selector", "#rows tr.row").click()
    dls = browser.find_elements("css selector", "#rows tr.detail .side dl")
    return [dict(zip([t.text for t in dl.find_elements("tag name", "dt")],
                     [d.text for d in dl.find_elements("tag name", "dd")]))["latency"] for dl in dls]


def test_a_recording_without_latencies_says_so_instead_of_0_s(browser, n50_run):
    study = pl.read_parquet(N50)
    assert not [c for c in study.columns if "latenc" in c]  # the study recorded no latency at all
    _open(browser, n50_run / "report.html")
    assert "not in the recordings (provider, local-gpu)" in _figure(browser, "latency per side").text
    assert _stat(browser, "latency p50 (s)") == ["not in the recording"] * 2
    assert _first_detail_latencies(browser) == ["not in the recording"] * 2


LATENCIES = {"fast": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0], "slow": [4.0, 4.5, 5.0, 6.0, 8.0, 9.5]}  # by hand, per row


def _recorded_run(tmp_path: Path) -> list[str]:
    """A recording with real latencies (a run dir's tidy rows, written here), and `compare` arguments that
    replay both of its arms."""
    ids, texts = [f"id{i}" for i in range(6)], [f"some text number {i}" for i in range(6)]
    pl.DataFrame([{"example_id": ids[i], "text": texts[i], "arm": arm, "repeat": 0, "content": "0", "reasoning": "",
                   "raw": "0", "latency_s": latency, "error": None}
                  for arm, latencies in LATENCIES.items() for i, latency in enumerate(latencies)]
                 ).write_parquet(tmp_path / "recording.parquet")
    pl.DataFrame({"conv_id": ids, "user_input": texts, "toxicity": [0] * 6}).write_csv(tmp_path / "rows.csv")
    arms = ",".join(f"recorded[path={tmp_path / 'recording.parquet'};side={arm};label={arm}]" for arm in LATENCIES)
    return ["compare", "--backends", arms, "--dataset", str(tmp_path / "rows.csv"), "--policy", "toxic_simple",
            "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--json"]


def _latency_bars(figure) -> dict[str, list[tuple[int, float, float]]]:
    """side → (count, low, high) per bar, from each bar's own title."""
    bars: dict[str, list[tuple[int, float, float]]] = {}
    for title in figure.find_elements("css selector", "rect > title"):
        m = re.fullmatch(r"[AB]: (\w+): (\d+) in \[([\d.]+), ([\d.]+)\) s", title.get_attribute("textContent"))
        assert m, title.get_attribute("textContent")
        bars.setdefault(m.group(1), []).append((int(m.group(2)), float(m.group(3)), float(m.group(4))))
    return bars


def test_recorded_latencies_are_shown_when_replayed_from_the_cache(browser, tmp_path):
    args = _recorded_run(tmp_path)
    CliRunner().invoke(app, args)
    second = CliRunner().invoke(app, args)  # every answer from the cache now
    summary = json.loads(second.stdout)
    assert summary["backends"]["a"]["cached"] == 6 == summary["backends"]["b"]["cached"]
    _open(browser, Path(summary["run_dir"]) / "report.html")
    bars = _latency_bars(_figure(browser, "latency per side"))
    for arm, latencies in LATENCIES.items():
        assert sum(count for count, _, _ in bars[arm]) == len(latencies)
        for latency in latencies:  # each in its bar, both sides on one axis
            assert any(lo <= latency <= hi and count for count, lo, hi in bars[arm]), (arm, latency)
    assert [b[1:] for b in bars["fast"]] == [b[1:] for b in bars["slow"]]
    assert _stat(browser, "latency p50 (s)") == ["2.000 (recorded)", "6.000 (recorded)"]  # upper medians
    assert _first_detail_latencies(browser) == ["0.500 s (recorded)", "4.000 s (recorded)"]
