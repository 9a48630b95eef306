"""Which parameters a server's 400/422 names as the cause (toxcmp.backends.api.rejected_parameters)."""

from __future__ import annotations

import pytest

from toxcmp.backends.api import rejected_parameters
from toxcmp.backends.http.chat import error_param

BODY = {"model": "m", "messages": [], "max_tokens": 64, "temperature": 0.0, "seed": 0, "reasoning_effort": "low",
        "top_p": 1.0}


@pytest.mark.parametrize("status, message, param, expected", [
    (400, "`logprobs` is not supported", "seed", ["seed"]),  # OpenAI's error.param wins over the message
    (422, "Unexpected fields in the request: {'reasoning_effort'}", None, ["reasoning_effort"]),  # transformers serve
    (400, "Unsupported parameters: seed, top_p", None, ["seed", "top_p"]),
    (400, "max_tokens must be at most 4096", None, []),  # essential: never dropped, the request fails
    (400, "the prompt is too long for this model", None, []),  # names nothing sent: an ordinary failure
    (400, "unknown field reasoning_effort_level", None, []),  # a longer word is not the name
    (500, "seed broke the server", None, []),  # not a refusal
    (400, "`model` not found", "model", []),
])
def test_what_a_refusal_names(status, message, param, expected):
    assert rejected_parameters(status, message, param, BODY) == expected


def test_error_param_reads_openai_error_bodies():
    assert error_param('{"error": {"message": "x", "param": "logprobs"}}') == "logprobs"
    assert error_param('{"detail": "Unexpected fields"}') is None
    assert error_param("not json") is None
