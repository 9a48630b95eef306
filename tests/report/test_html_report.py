"""report.html in a real headless Chromium (issue 14): the disagreement browser, side-by-side expansion, search,
keyboard, a screenshot that is not blank, and hostile text that must render as text and never run.

Expected values come from results.parquet (what the page must agree with) and from the study file's columns.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl
import pytest

from toxcmp.config import configs_dir
from toxcmp.report.html import build_html
from toxcmp.domain.policies import load_policy
from toxcmp.analysis.scoring import derive, summarize

from tests.helpers.browser import start_browser

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
ATTACK = ('<script>window.__pwned = "script"</script><img src=x onerror="window.__pwned=\'img\'">'
          '</script><script>window.__pwned="breakout"</script>{{DATA}} \u2028 <!-- & -->')


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def n50_run(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    out = tmp_path_factory.mktemp("n50")
    both = f"recorded[path={N50};side=api;label=provider],recorded[path={N50};side=local;label=local-gpu]"
    result = CliRunner().invoke(app, ["compare", "--backends", both, "--dataset", str(N50), "--policy",
                                      "toxic_chat_claude_1", "--model", "gpt-oss-safeguard-20b", "--output-dir", str(out),
                                      "--json", "--cache-dir", str(out / "cache")])
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["run_dir"])


def _open(browser, path: Path) -> None:
    browser.get(path.resolve().as_uri())
    browser.implicitly_wait(5)
    assert browser.find_element("css selector", "body[data-ready='1']")


def _shown_ids(browser) -> list[str]:
    return [e.get_attribute("title") for e in browser.find_elements("css selector", "#rows tr.row td:nth-child(2)")]


def _click_filter(browser, name: str) -> None:
    browser.find_element("css selector", f"#filters button[data-filter='{name}']").click()


def test_disagree_filter_shows_exactly_the_disagreements(browser, n50_run):
    frame = pl.read_parquet(n50_run / "pairs.parquet")
    _open(browser, n50_run / "report.html")
    assert "PASS" in browser.find_element("id", "verdict").text
    assert len(_shown_ids(browser)) == frame.height == 50
    _click_filter(browser, "Disagree")
    expected = frame.filter(pl.col("cause").is_not_null())["example_id"].to_list()
    assert _shown_ids(browser) == expected and len(expected) == 2
    _click_filter(browser, "label_flip")
    assert _shown_ids(browser) == frame.filter(pl.col("cause") == "label_flip")["example_id"].to_list()


def test_a_row_expands_into_both_sides_with_their_reasoning(browser, n50_run):
    study = pl.read_parquet(N50)
    _open(browser, n50_run / "report.html")
    _click_filter(browser, "label_flip")
    browser.find_element("css selector", "#rows tr.row").click()
    detail = browser.find_element("css selector", "#rows tr.detail")
    boxes = detail.find_elements("css selector", ".box[data-part='reasoning']")
    assert len(boxes) == 2 and all(b.is_displayed() for b in boxes)
    flip = study.filter(pl.col("text").str.contains("Walmart")).row(0, named=True)
    shown = [b.get_attribute("textContent") for b in boxes]
    assert shown == [flip["api_reasoning"], flip["local_reasoning"]]  # the texts themselves, whole
    assert detail.find_elements("css selector", "mark.diff")  # the differing spans are marked
    answers = [b.get_attribute("textContent") for b in detail.find_elements("css selector", ".box[data-part='content']")]
    assert answers == [flip["api_response"], flip["local_response"]]


def test_search_keyboard_and_a_screenshot_that_is_not_blank(browser, n50_run):
    from PIL import Image

    frame = pl.read_parquet(n50_run / "pairs.parquet")
    _open(browser, n50_run / "report.html")
    word = "walmart"
    hits = [r["example_id"] for r in frame.iter_rows(named=True)
            if any(word in (r[k] or "").lower() for k in ("example_id", "text", "a_content", "b_content",
                                                            "a_reasoning", "b_reasoning"))]
    box = browser.find_element("id", "search")
    box.send_keys(word)
    assert _shown_ids(browser) == hits and hits
    box.clear()
    box.send_keys("zzzz-no-such-word")
    assert _shown_ids(browser) == []
    browser.refresh()
    _open(browser, n50_run / "report.html")
    body = browser.find_element("tag name", "body")
    body.send_keys("j")
    body.send_keys("j")
    selected = browser.find_elements("css selector", "#rows tr.row.sel td:nth-child(1)")
    assert [e.text for e in selected] == ["2"]
    body.send_keys("o")
    assert browser.find_elements("css selector", "#rows tr.detail")
    image = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # text, tables and charts, not one flat colour
    dark = sum(n for n, (r, g, b) in (colours or []) if r + g + b < 200)
    assert colours is None or dark > 1000


def _attack_rows() -> list[dict]:
    policy = load_policy("toxic_simple")
    rows = []
    for i, text in enumerate([ATTACK, "an ordinary row"]):
        row = {"example_id": f"<b>id{i}</b>", "text": text, "toxicity": 0, "weight": 1.0}
        for p in ("a", "b"):
            row |= {f"{p}_raw": ATTACK if p == "a" else "0", f"{p}_content": ATTACK if p == "a" else "0",
                    f"{p}_reasoning": ATTACK, f"{p}_latency_s": 0.1, f"{p}_cached": False, f"{p}_error": None,
                    f"{p}_served_by": "<i>server</i>", f"{p}_prompt_hash": "h", f"{p}_finish_reason": "stop",
                    f"{p}_retries": 0, f"{p}_backend": "<u>x</u>"}
        rows.append(derive(row, policy, False))
    return rows


def test_hostile_text_renders_as_text_and_never_runs(browser, tmp_path):
    rows = _attack_rows()
    summary = summarize(rows, ["<script>window.__pwned='label'</script>", "b"], kappa_resamples=20)
    summary["metadata"] = {"run_id": "<script>window.__pwned='meta'</script>", "policy": {"name": "{{DATA}}"}}
    page = tmp_path / "report.html"
    page.write_text(build_html(rows, summary), encoding="utf-8")
    _open(browser, page)
    assert browser.execute_script("return window.__pwned === undefined")
    first = browser.find_element("css selector", "#rows tr.row td.text")
    assert first.get_attribute("textContent") == ATTACK  # shown literally, whole
    first.click()
    assert browser.execute_script("return window.__pwned === undefined")
    content = browser.find_elements("css selector", "#rows tr.detail .box[data-part='content']")[0]
    assert content.get_attribute("textContent") == ATTACK
    assert not browser.find_elements("css selector", "#rows img, #rows script, #rows b, #rows u")


@pytest.mark.slow
def test_the_report_of_a_bundled_model_run(browser, cli, tmp_path):
    args = ["compare", "--backends", "local[strategy=naive],local", "--dataset", str(SAMPLE), "--sample-size", "3",
            "--max-new-tokens", "8", "--output-dir", str(tmp_path / "out"), "--json"]
    result = cli(*args)
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    frame = pl.read_parquet(run_dir / "pairs.parquet")
    _open(browser, run_dir / "report.html")
    assert browser.find_element("id", "verdict").text.startswith("INCONCLUSIVE")
    assert _shown_ids(browser) == frame["example_id"].to_list()
    _click_filter(browser, "Parse failure")
    parse_failures = frame.filter(pl.col("a_binary").is_null() | pl.col("b_binary").is_null())["example_id"].to_list()
    assert _shown_ids(browser) == parse_failures


def test_bench_html_measures_a_2000_row_report(cli):  # its times are printed, only checked to exist: not serial
    from tests.conftest import RECORDED, require_shared

    sources = [require_shared(RECORDED / f"api_{m}_toxic_simple_n2000.parquet") for m in ("gpt-oss-20b", "gpt-oss-safeguard-20b")]
    result = cli("bench", "html", *map(str, sources), "--loads", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 2000 and data["bytes"] < data["budget_bytes"] and data["interactive_ms"] > 0


def test_a_multi_arm_report_switches_comparisons(browser, tmp_path):
    from selenium.webdriver.support.ui import Select
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    copy = tmp_path / "copy.parquet"
    copy.write_bytes(N50.read_bytes())
    arms = (f"recorded[path={N50};side=local;label=local-gpu],recorded[path={N50};side=api;label=provider],"
            f"recorded[path={copy};side=local;label=copy]")
    result = CliRunner().invoke(app, ["compare", "--backends", arms, "--dataset", str(N50), "--policy",
                                      "toxic_chat_claude_1", "--output-dir", str(tmp_path / "out"), "--json"])
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    pairs = pl.read_parquet(run_dir / "pairs.parquet")
    _open(browser, run_dir / "report.html")
    assert "Arms (reference: local-gpu)" in browser.find_element("tag name", "body").text
    _click_filter(browser, "Disagree")
    assert _shown_ids(browser) == pairs.filter((pl.col("arm") == "provider") & pl.col("cause").is_not_null())["example_id"].to_list()
    Select(browser.find_element("id", "pair")).select_by_value("copy")
    assert _shown_ids(browser) == []  # the copy never disagrees with the reference
    _click_filter(browser, "All")
    assert len(_shown_ids(browser)) == 50 and browser.find_element("id", "hb").text == "B: copy"


REFUSAL = "I'm sorry, but I can't help with that."


def _three_arm_page() -> str:
    """ref answers 0 1 0 0; x: 0 0 refusal 0; y: 1 1 0 and an answer that is no label. Every truth is 0."""
    from toxcmp.analysis.arms import assemble, summarize_arms
    from toxcmp.analysis.scoring import verdict_fields

    policy = load_policy("toxic_simple")
    answers = {"ref": ["0", "1", "0", "0"], "x": ["0", "0", REFUSAL, "0"], "y": ["1", "1", "0", "garbage text"]}
    tidy = []
    for arm, texts in answers.items():
        for i, answer in enumerate(texts):
            row = {"example_id": f"e{i}", "text": f"text {i}", "toxicity": 0, "weight": 1.0, "arm": arm, "repeat": 0,
                   "raw": answer, "content": answer, "reasoning": "", "latency_s": 0.1 * (i + 1), "cached": False,
                   "error": None}
            tidy.append(row | verdict_fields(row, policy, False))
    assembled = assemble(tidy, list(answers), "ref", {arm: (policy, False) for arm in answers})
    summary = summarize_arms(assembled, [{"label": arm} for arm in answers], 0.95, 0.5, kappa_resamples=20)
    return build_html([r for rows in assembled.comparisons.values() for r in rows], summary)


def _section(page: str, cls: str, arm: str) -> str:
    import re

    found = re.findall(rf'<(?:section|div) class="{cls}" data-arm="{arm}">(.*?)</(?:section|div)>', page, re.S)
    assert len(found) == 1, (cls, arm, len(found))
    return found[0]


def _tables(section: str) -> list[list[list[str]]]:
    import re

    return [[re.findall(r"<t[dh]>(.*?)</t[dh]>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", table)]
            for table in re.findall(r"<table[^>]*>(.*?)</table>", section, re.S)]


def test_the_page_shows_every_comparisons_matrices():
    page = _three_arm_page()
    # by hand, reference (rows) against the arm (columns), labels in outcome order
    x_outcomes = [["A ↓ / B →", "0", "1", "refusal"], ["0", "2", "0", "1"], ["1", "1", "0", "0"],
                  ["refusal", "0", "0", "0"]]
    y_outcomes = [["A ↓ / B →", "0", "1", "unparsed"], ["0", "1", "1", "1"], ["1", "0", "1", "0"],
                  ["unparsed", "0", "0", "0"]]
    x, y = _section(page, "comparison matrices", "x"), _section(page, "comparison matrices", "y")
    assert page.index('data-arm="x"') < page.index('data-arm="y"')  # the headline first
    assert "x against the reference ref" in x and "outcomes: ref (rows) vs x (columns)" in x
    # toxic_simple's fine-grained categories are its labels: the transitions count as the outcomes do, and the
    # fine labels go by frequency (x: "0" 6 times, "1" and "refusal" once each; y: "0" 4, "1" 3, "unparsed" 1)
    assert _tables(x) == [x_outcomes, x_outcomes]
    assert _tables(y) == [y_outcomes, y_outcomes]


def test_the_page_shows_every_comparisons_charts():
    import re

    from toxcmp.report.html import _H, _PAD

    page = _three_arm_page()
    # by hand: x agrees on e0, not e1 (label flip) nor e2 (refusal), then e3; y not e0 (flip), e1, e2, not e3 (parse)
    for arm, causes, running in (
            ("x", {"error": 0, "refusal": 1, "parse": 0, "label_flip": 1, "fine_grain_only": 0}, [1, 1 / 2, 1 / 3, 2 / 4]),
            ("y", {"error": 0, "refusal": 0, "parse": 1, "label_flip": 1, "fine_grain_only": 0}, [0, 1 / 2, 2 / 3, 2 / 4])):
        charts = _section(page, "charts comparison", arm)
        captions = re.findall(r"<figcaption>(.*?)</figcaption>", charts)
        assert len(captions) == 4 and all(c.startswith(f"{arm} vs ref: ") for c in captions)
        bars = dict((label, int(value)) for value, label in
                    re.findall(r'<text [^>]*>(\d+)</text><text [^>]*>([a-z_]+)</text>', charts))
        assert bars == causes, arm
        (line,) = re.findall(r'<polyline points="([^"]+)"', charts)  # its running agreement, over its 4 rows
        shown = [(_H - _PAD - float(point.split(",")[1])) / (_H - 2 * _PAD) for point in line.split()]
        assert shown == pytest.approx(running, abs=1e-3), arm
