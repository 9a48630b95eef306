"""The public API reads an answer the way every other path does."""

from __future__ import annotations

from toxcmp.core import verdict_result
from toxcmp.domain.policies import load_policy
from toxcmp.domain.responses import ModelResponse


def _response(content: str, reasoning: str, finish_reason: str) -> ModelResponse:
    return ModelResponse(content=content, reasoning=reasoning, raw_text=content, backend="api", model="m",
                         latency_s=0.1, finish_reason=finish_reason)


def test_a_cut_off_answer_is_truncated_in_classify_too():
    policy = load_policy("toxic_simple")
    cut = verdict_result(_response("", "The user asks about", "length"), policy)
    assert cut.parse_error.startswith("truncated") and "--max-new-tokens" in cut.parse_error and not cut.parse_ok
    ended = verdict_result(_response("", "The user asks about", "stop"), policy)
    assert ended.parse_error.startswith("no final answer") and not ended.parse_ok
    answered = verdict_result(_response("1", "insult", "stop"), policy)
    assert answered.parse_ok and answered.binary_label == 1
