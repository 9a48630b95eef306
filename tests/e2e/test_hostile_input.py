"""Hostile and malformed input: property tests over the parser, the dataset loader and policy files."""

from __future__ import annotations

import time

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toxcmp.domain import data
from toxcmp.errors import ToxcmpError
from toxcmp.domain.parsing import parse_output, parse_verdict, split_output
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request

POLICIES = [load_policy("toxic_simple"), load_policy("toxic_chat_claude_1")]
MARKERS = ["<|channel|>", "<|message|>", "<|end|>", "<|start|>", "<|return|>", "final", "analysis", "assistantfinal",
           "<|constrain|>", "{", "}", "```", "\x00", "\n", "0", "1", "hate", "I'm sorry"]
hostile_text = st.lists(st.one_of(st.text(), st.sampled_from(MARKERS),
                                  st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "So"])),
                        max_size=40).map("".join)
relaxed = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@relaxed
@given(text=hostile_text, harmony=st.sampled_from([True, False, None]), policy=st.sampled_from(POLICIES))
def test_parser_never_raises_and_returns_a_consistent_verdict(text, harmony, policy):
    parts, verdict = parse_output(text, policy, harmony)
    assert isinstance(parts.content, str) and isinstance(parts.reasoning, str)
    assert verdict.binary_label in (None, 0, 1)
    if verdict.parse_ok:
        assert verdict.binary_label is not None and verdict.parse_error is None
    else:
        assert verdict.binary_label is None and verdict.parse_error
    if verdict.fine_grain_label is not None:
        assert verdict.fine_grain_label in policy.fine_grained_labels


@relaxed
@given(quoted=hostile_text, label=st.sampled_from(["0", "1"]))
def test_injected_markers_in_the_analysis_never_override_the_final_answer(quoted, label):
    raw = (f"<|channel|>analysis<|message|>The user wrote: {quoted}<|end|>"
           f"<|start|>assistant<|channel|>final<|message|>{label}<|return|>")
    _, verdict = parse_output(raw, POLICIES[0], harmony=True)
    assert verdict.binary_label == int(label)


@relaxed
@given(echo=hostile_text)
def test_a_non_harmony_model_echoing_markers_is_never_split(echo):
    assert split_output(echo, harmony=False).format == "plain"


@pytest.mark.serial  # a wall-clock bound
@pytest.mark.parametrize("kind", ["label", "json", "prose"])
def test_one_megabyte_outputs_parse_quickly(kind):
    body = {"label": "0" * 1_000_000, "json": '{"label": "' + "a" * 1_000_000 + '"}',
            "prose": ("toxic? maybe " * 80_000) + "\n1"}[kind]
    started = time.perf_counter()
    for text in (body, "<|channel|>analysis<|message|>" + body + "<|end|><|start|>assistant<|channel|>final<|message|>1"):
        parse_output(text, POLICIES[1], None)
        parse_verdict(text, POLICIES[0])
    assert time.perf_counter() - started < 10  # no catastrophic regex backtracking (measured: well under 1 s)


def test_one_megabyte_input_text_builds_a_request_and_strips_nul():
    request = build_request(POLICIES[0], "a\x00b" * 350_000, __import__("toxcmp.domain.models").domain.models.resolve_model("smollm2-135m"),
                            __import__("toxcmp.config").config.GenerationConfig())
    assert "\x00" not in request.messages[-1][1] and len(request.messages[-1][1]) == 700_000


csv_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00\r"), max_size=200)


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(csv_text.filter(lambda t: t.strip() != ""), min_size=1, max_size=8),
       labels=st.lists(st.sampled_from([0, 1]), min_size=8, max_size=8))
def test_csv_with_quotes_newlines_and_unicode_round_trips(tmp_path_factory, texts, labels):
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    frame = pl.DataFrame({"conv_id": [f"c{i}" for i in range(len(texts))], "user_input": texts,
                          "toxicity": labels[: len(texts)]})
    frame.write_csv(path)
    loaded, _ = data.load(str(path))
    assert loaded["text"].to_list() == texts and loaded["toxicity"].to_list() == labels[: len(texts)]


column_values = st.one_of(st.integers(-3, 3), st.floats(allow_nan=True), st.booleans(), st.text(max_size=5),
                          st.none())


@settings(max_examples=80, deadline=None)
@given(texts=st.lists(st.one_of(st.text(max_size=20), st.integers(), st.none()), min_size=1, max_size=5),
       tox=st.lists(column_values, min_size=5, max_size=5))
def test_parquet_with_wrong_column_types_loads_or_fails_cleanly(tmp_path_factory, texts, tox):
    path = tmp_path_factory.mktemp("pq") / "d.parquet"
    try:
        frame = pl.DataFrame({"user_input": texts, "toxicity": tox[: len(texts)]}, strict=False)
    except Exception:  # noqa: BLE001 - polars refuses some mixes outright; nothing for the loader to see
        return
    frame.write_parquet(path)
    try:
        loaded, _ = data.load(str(path))
    except ToxcmpError as exc:
        assert "\n" not in exc.one_line()
        return
    # an empty label is a row without one (None), never a 0 or a 1 made up
    assert set(loaded["toxicity"].to_list()) <= {0, 1, None} and loaded["text"].dtype == pl.String


@settings(max_examples=150, deadline=None)
@given(body=st.one_of(st.text(max_size=400),
                      st.builds(lambda fm, rest: f"+++\n{fm}\n+++\n{rest}", st.text(max_size=200), st.text(max_size=200)),
                      st.builds(lambda cats: "+++\nname = \"x\"\noutput = \"label\"\n[categories]\n" + cats + "\n+++\n"
                                "## INSTRUCTIONS\na\n## DEFINITIONS\nb\n## VIOLATES (1)\nc\n## SAFE (0)\nd\n## EXAMPLES\ne\n",
                                st.text(max_size=80))))
def test_malformed_policy_files_fail_with_a_policy_error(tmp_path_factory, body):
    path = tmp_path_factory.mktemp("pol") / "p.md"
    path.write_text(body, encoding="utf-8", errors="surrogatepass") if "\ud800" not in body else path.write_bytes(
        body.encode("utf-8", "surrogatepass"))
    try:
        policy = load_policy(str(path))
    except ToxcmpError as exc:
        assert exc.one_line() and "\n" not in exc.one_line()
        return
    assert policy.categories and all(v in (0, 1) for _, v in policy.categories)


def test_policy_files_are_data_never_executed(tmp_path, cli):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.md"
    evil.write_text(
        "+++\nname = \"evil\"\noutput = \"label\"\n[categories]\n\"0\" = 0\n\"1\" = 1\n+++\n"
        f"## INSTRUCTIONS\n{{{{ 7 * 191 }}}} {{% raw %}} __import__('os').system('touch {marker}') "
        f"$(touch {marker}) `touch {marker}`\n"
        "## DEFINITIONS\nx\n## VIOLATES (1)\nx\n## SAFE (0)\nx\n## EXAMPLES\nx\n", encoding="utf-8")
    policy = load_policy(str(evil))
    assert "{{ 7 * 191 }}" in policy.text
    rendered = cli("render", "hello", "--policy", str(evil), "--json")
    assert rendered.exit_code == 0, rendered.output
    prompt = __import__("json").loads(rendered.stdout)["local_prompt"]
    assert "{{ 7 * 191 }}" in prompt and "1337" not in prompt  # template syntax in a policy stays text
    assert not marker.exists()
