"""The render date of a request: its check, and its place in the request's payload and prompt hash."""

from __future__ import annotations

import hashlib
import json

import pytest

from toxcmp.config import GenerationConfig
from toxcmp.domain.models import resolve_model
from toxcmp.domain.prompting import ChatRequest, check_render_date, today_utc
from toxcmp.errors import UsageError

MESSAGES = (("system", "the policy"), ("user", "some text"))


def _request(date: str | None) -> ChatRequest:
    return ChatRequest(model=resolve_model("smollm2-135m"), messages=MESSAGES, generation=GenerationConfig(),
                       render_date=date)


@pytest.mark.parametrize("text", ["2025-02-30", "2025-1-1", "20250101", "2025-W01-1", "today", "", " 2025-01-01",
                                  "2025-01-01T00:00"])
def test_a_bad_render_date_is_a_usage_error_naming_the_format(text):
    with pytest.raises(UsageError) as err:
        check_render_date(text)
    assert "YYYY-MM-DD" in err.value.one_line() and "\n" not in err.value.one_line()


def test_a_good_render_date_is_kept_as_written():
    assert check_render_date("2024-02-29") == "2024-02-29"
    assert check_render_date(today_utc()) == today_utc()


def test_two_dates_are_two_prompt_hashes_and_the_date_is_in_the_payload():
    a, b = _request("2001-02-03"), _request("2019-12-31")
    assert a.payload()["render_date"] == "2001-02-03" and b.payload()["render_date"] == "2019-12-31"
    assert a.prompt_hash != b.prompt_hash
    assert a.prompt_hash == _request("2001-02-03").prompt_hash


def test_an_unpinned_request_hashes_as_before_dates_were_pinned():
    # the payload as it was written before render dates existed, by hand: an unpinned request keeps its hash,
    # so the answers cached for it (and the prompt hashes recorded in older runs) still match
    spec = resolve_model("smollm2-135m")
    before = {"model_id": spec.model_id, "revision": spec.revision,
              "messages": [{"role": "system", "content": "the policy"}, {"role": "user", "content": "some text"}],
              "template_options": {}, "generation": GenerationConfig().to_dict()}
    digest = hashlib.sha256(json.dumps(before, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert _request(None).prompt_hash == digest
    assert _request("2001-02-03").prompt_hash != digest
