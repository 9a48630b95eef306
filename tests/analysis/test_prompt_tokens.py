"""Prompt-token parity, the pure part: the statistics over rows that carry a reported and an own count, the
variant edits on hand-written renders, and the phrases the reports print. Expected values are counted by hand
here (and the Wilson interval is scipy's), never taken from toxcmp's output."""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from toxcmp.analysis.prompt_tokens import (
    NO_TOKENIZER,
    NO_USAGE,
    VARIANTS,
    Render,
    TemplateFacts,
    candidates,
    default_system_text,
    parity,
    reported_usage,
)
from toxcmp.report.text import prompt_tokens_phrase

POLICY = "## INSTRUCTIONS\nAnswer 0 or 1."
HARMONY = ("<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
           "Knowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: low\n\n"
           "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
           f"<|start|>developer<|message|># Instructions\n\n{POLICY}<|end|>"
           "<|start|>user<|message|>hello<|end|><|start|>assistant")
CHATML = f"<|im_start|>system\n{POLICY}<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
BASE = Render.of([{"role": "system", "content": POLICY}, {"role": "user", "content": "hello"}],
                 {"reasoning_effort": "low"})


def rows(reported, own, errors=0):
    out = [{"prompt_tokens": r, "own_prompt_tokens": o, "completion_tokens": 4, "error": None}
           for r, o in zip(reported, own)]
    return out + [{"prompt_tokens": None, "own_prompt_tokens": None, "error": "HTTP 500"}] * errors


def test_parity_counts_share_and_differences_by_hand():
    got = parity(rows([300, 300, 305, 310, None], [300, 300, 300, 300, 300], errors=1))
    assert (got["answered"], got["reported"], got["counted"], got["compared"]) == (5, 4, 5, 4)
    assert got["reason"] is None
    low, high = binomtest(2, 4).proportion_ci(method="wilson")
    eq = got["equal"]
    assert (eq["successes"], eq["n"], eq["value"]) == (2, 4, 0.5)
    assert eq["low"] == pytest.approx(low, abs=1e-6) and eq["high"] == pytest.approx(high, abs=1e-6)
    # differences reported − own: 0, 0, +5, +10 → median of the middle two, (0 + 5) / 2
    assert got["difference"] == {"min": 0, "median": 2.5, "max": 10, "counts": {"0": 2, "+5": 1, "+10": 1}}


def test_no_usage_is_undefined_with_its_reason_never_zero_percent():
    got = parity(rows([None, None, None], [300, 301, 302]))
    assert got["equal"] is None and got["difference"] is None and got["reason"] == NO_USAGE
    phrase = prompt_tokens_phrase(got)
    assert phrase.startswith("no usage reported") and "%" not in phrase and "0/" not in phrase
    assert got["completion_tokens"]["reported"] == 3  # completion counts are their own question


def test_no_tokenizer_is_undefined_with_its_reason():
    got = parity(rows([300, 301], [None, None]))
    assert got["equal"] is None and got["reason"] == NO_TOKENIZER
    assert "%" not in prompt_tokens_phrase(got)


def test_blank_parquet_cells_are_no_counts():
    got = parity(rows([float("nan"), 300], [300, 300]))
    assert got["reported"] == 1 and got["equal"]["n"] == 1


def test_variants_explaining_the_differences_are_counted_and_named():
    r = rows([310, 310, 290, 300], [300, 300, 300, 300])
    r[0]["prompt_variants"] = r[1]["prompt_variants"] = "default_system_prompt"
    r[2]["prompt_variants"] = ""  # searched, nothing matched
    got = parity(r)
    v = got["variants"]
    assert (v["differing"], v["searched"], v["explained"]) == (3, 3, 2)
    assert v["explained_by"] == {"default_system_prompt": 2}
    phrase = prompt_tokens_phrase(got)
    assert "1/4 rows" in phrase and "matches: the template's default system prompt before the policy (2/3" in phrase
    assert "1 unexplained" in phrase


def test_reported_usage_drops_a_chunk_count_from_a_stream_without_usage():
    assert reported_usage({"prompt_tokens": 21, "completion_tokens": 8, "streamed": True}) == \
        {"prompt_tokens": 21, "completion_tokens": 8}
    # the api backend counts content chunks when a stream carries no usage: not a count the server reported
    assert reported_usage({"prompt_tokens": None, "completion_tokens": 7, "streamed": True}) == \
        {"prompt_tokens": None, "completion_tokens": None}
    assert reported_usage({"prompt_tokens": None, "completion_tokens": 7, "streamed": False}) == \
        {"prompt_tokens": None, "completion_tokens": 7}
    assert reported_usage(None) == {"prompt_tokens": None, "completion_tokens": None}


# -- the variants, on hand-written renders ---------------------------------------------------------------------------

def edited(name: str, text: str) -> list[str | None]:
    return [r.edited(text) for r in VARIANTS[name].renders(BASE, TemplateFacts())]


def test_every_variant_is_documented_in_one_place():
    for variant in VARIANTS.values():
        assert variant.doc and variant.title and variant.group, variant.name


def test_date_variants_on_a_harmony_render():
    assert edited("date_removed", HARMONY) == [HARMONY.replace("Current date: 2025-08-05\n", "")]
    assert edited("date_changed", HARMONY) == [HARMONY.replace("2025-08-05", d)
                                               for d in ("2025-08-04", "2025-08-06", "2024-08-04")]
    assert edited("date_removed", CHATML) == [None]  # no date line: the variant does not apply


def test_policy_role_and_header_variants_on_a_harmony_render():
    assert edited("policy_as_system_message", HARMONY) == [HARMONY.replace(
        f"<|start|>developer<|message|># Instructions\n\n{POLICY}", f"<|start|>system<|message|># Instructions\n\n{POLICY}")]
    assert edited("no_instructions_header", HARMONY) == [HARMONY.replace("# Instructions\n\n", "")]
    assert edited("policy_as_system_message", CHATML) == [None]  # already a system message
    assert edited("no_instructions_header", CHATML) == [None]


def test_message_and_option_variants():
    facts = TemplateFacts(default_system="You are SmolLM.", bos_token="<s>")
    by_name = dict(candidates(BASE, facts))
    assert by_name["policy_as_developer_message"][0].messages == (("developer", POLICY), ("user", "hello"))
    assert by_name["default_system_prompt"][0].messages == (("system", "You are SmolLM."), ("system", POLICY),
                                                            ("user", "hello"))
    assert by_name["policy_dropped"][0].messages == (("user", "hello"),)
    assert by_name["policy_in_user_message"][0].messages == (("user", f"{POLICY}\n\nhello"),)
    assert by_name["reasoning_high"][0].template_options() == {"reasoning_effort": "high"}
    assert "reasoning_low" not in by_name  # the requested effort is no variant
    assert by_name["bos_added"][0].edited(CHATML) == "<s>" + CHATML
    assert "default_system_prompt" not in dict(candidates(BASE, TemplateFacts()))  # a template without one


def test_combinations_pair_variants_of_different_groups_only():
    names = [name for name, _ in candidates(BASE, TemplateFacts(), pairs=True)]
    assert "policy_as_system_message+no_instructions_header" in names
    assert not any(n.startswith(("reasoning_medium+reasoning_", "date_removed+date_")) for n in names)
    pair = dict(candidates(BASE, TemplateFacts(), pairs=True))["policy_as_system_message+no_instructions_header"][0]
    assert pair.edited(HARMONY) == HARMONY.replace(f"<|start|>developer<|message|># Instructions\n\n{POLICY}",
                                                   f"<|start|>system<|message|>{POLICY}")


def test_default_system_prompt_found_between_the_same_surroundings():
    s, u = "⟦S⟧", "⟦U⟧"
    smol = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    alone = f"<|im_start|>system\n{smol}<|im_end|>\n<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n"
    after = f"<|im_start|>system\n{s}<|im_end|>\n<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n"
    assert default_system_text(alone, after, s, u) == smol
    plain = after.replace(f"<|im_start|>system\n{s}<|im_end|>\n", "")
    assert default_system_text(plain, after, s, u) is None  # the template writes none
    harmony_alone = HARMONY.split("<|start|>developer")[0] + f"<|start|>user<|message|>{u}<|end|><|start|>assistant"
    harmony_after = HARMONY.replace(POLICY, s).replace("hello", u)
    assert default_system_text(harmony_alone, harmony_after, s, u) is None  # gpt-oss: no separate default message
    other_shape = f"<|im_start|>preamble of another shape<|im_end|>\n<|im_start|>user\n{u}<|im_end|>\n"
    assert default_system_text(other_shape, after, s, u) is None  # not between the same surroundings: no guess


def test_phrase_with_equal_counts():
    phrase = prompt_tokens_phrase(parity(rows([300, 301], [300, 301])))
    low, _ = binomtest(2, 2).proportion_ci(method="wilson")
    assert phrase == f"reported = toxcmp's render on 2/2 rows (100.0% [{100 * low:.1f}–100.0])"
    assert not math.isnan(low)
