"""The pinned render date reaches the chat template's own date line, through the real `apply_chat_template` of a
tokenizer built here, carrying the real gpt-oss template's "Knowledge cutoff" and "Current date" lines
(`tests.helpers.gptoss_template`). Expected prompts are plain jinja2 renderings with a fixed clock, or written by
hand."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

pytest.importorskip("transformers", reason="builds a tokenizer: the `local` extra")  # the floor venv has none

from toxcmp.config import GenerationConfig  # noqa: E402
from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request

from tests.helpers.gptoss_template import dated_tokenizer, expected_prompt

SYSTEM_AT_2001_02_03 = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n"
    "Current date: 2001-02-03\n\n"
    "Reasoning: low\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
    "<|start|>developer<|message|># Instructions\n\n")


@pytest.fixture(scope="module")
def tokenizer():
    return dated_tokenizer()


def _request(date, text="you are an idiot"):
    spec = resolve_model("gpt-oss-20b")  # a Harmony model: the template options are sent
    return build_request(load_policy("toxic_simple"), text, spec, GenerationConfig(reasoning_effort="low"),
                         render_date=date)


def _days_now() -> set[str]:
    return {datetime.now().strftime("%Y-%m-%d"), datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def test_the_rendered_prompt_holds_the_pinned_date_not_todays(tokenizer):
    from toxcmp.backends.local_model import render_prompt

    before = _days_now()
    request = _request("2001-02-03")
    prompt = render_prompt(tokenizer, request)
    assert prompt == expected_prompt(request.chat_messages(), "2001-02-03", reasoning_effort="low")
    assert prompt.startswith(SYSTEM_AT_2001_02_03)
    assert prompt.endswith("<|start|>user<|message|>you are an idiot<|end|><|start|>assistant")
    assert not any(f"Current date: {day}" in prompt for day in before | _days_now())


def test_two_dates_render_two_prompts_that_differ_only_in_the_date_line(tokenizer):
    from toxcmp.backends.local_model import render_prompt

    first, second = render_prompt(tokenizer, _request("2001-02-03")), render_prompt(tokenizer, _request("2019-12-31"))
    assert first != second
    assert second == expected_prompt(_request("2019-12-31").chat_messages(), "2019-12-31", reasoning_effort="low")
    assert first.replace("Current date: 2001-02-03\n", "Current date: 2019-12-31\n") == second


def test_unpinned_the_template_reads_the_machine_clock(tokenizer):
    # what the pin is for: without a date, transformers' strftime_now writes the machine's today (local time)
    from toxcmp.backends.local_model import render_prompt

    before = datetime.now().strftime("%Y-%m-%d")
    prompt = render_prompt(tokenizer, _request(None))
    after = datetime.now().strftime("%Y-%m-%d")
    assert any(prompt == expected_prompt(_request(None).chat_messages(), day, reasoning_effort="low")
               for day in {before, after})


def test_a_template_without_a_clock_renders_the_same_on_any_date():
    from toxcmp.backends.local_model import render_prompt
    from toxcmp.domain.shaped import HARMONY_TEMPLATE

    tok = dated_tokenizer(HARMONY_TEMPLATE)  # the condensed stand-in: no date line
    assert render_prompt(tok, _request("2001-02-03")) == render_prompt(tok, _request(None))


def test_every_literal_format_is_pinned_and_a_computed_one_is_an_error():
    from jinja2.exceptions import TemplateError

    from toxcmp.backends.local_model import render_prompt

    tok = dated_tokenizer("{{ strftime_now('%d %b %Y') }}|{{ strftime_now(\"%A\") }}")
    assert render_prompt(tok, _request("2001-02-03")) == "03 Feb 2001|Saturday"
    computed = dated_tokenizer("{% set f = '%Y' %}{{ strftime_now(f) }}")
    with pytest.raises(TemplateError, match="literals"):
        render_prompt(computed, _request("2001-02-03"))


@pytest.mark.slow
def test_the_shared_prefix_is_probed_at_the_pinned_date(tmp_path):
    """`prefix`: the shared policy prefix is rendered at the request's date (else it never matches a prompt and
    every example falls back to plain batching); its answers are token-identical to `naive`."""
    from toxcmp.backends import BackendConfig
    from toxcmp.backends.local import LocalBackend

    from tests.helpers.gptoss_template import build_dated_gptoss

    spec = resolve_model(str(build_dated_gptoss(tmp_path / "model")))
    texts = ["hello there", "you idiot", "a longer text about the weather and bread", "hi"]
    requests = [build_request(load_policy("toxic_simple"), t, spec, GenerationConfig(max_new_tokens=4),
                              render_date="2001-02-03") for t in texts]
    prefix = LocalBackend(BackendConfig(strategy="prefix", dtype="float32", device="cpu"))
    naive = LocalBackend(BackendConfig(strategy="naive", dtype="float32", device="cpu"))
    got, reference = prefix.generate(requests), naive.generate(requests)
    assert [r.error for r in got] == [None] * len(texts)
    assert prefix.stats["prefix_hits"] == len(texts) and prefix.stats["prefix_misses"] == 0
    assert [r.raw_text for r in got] == [r.raw_text for r in reference]
    assert "Current date: 2001-02-03\n" in prefix.render(requests[0])
