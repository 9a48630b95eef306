"""Policy files as people write them (issue 23): the gpt-oss-safeguard guide's plain markdown without front matter,
the guide's JSON answer, an empty front matter, and headings of the author's own choosing."""

from __future__ import annotations

import pytest

from toxcmp.domain.parsing import parse_verdict
from toxcmp.domain.policies import load_policy, parse_policy_text
from toxcmp.errors import PolicyError

# Written the guide's way: plain markdown, its five sections, a bare 0/1 answer. No front matter.
GUIDE_BINARY = """## INSTRUCTIONS
Decide whether the message is spam. Answer 1 if it VIOLATES this policy, 0 if it is SAFE.

## DEFINITIONS
- Spam: unsolicited promotion sent in bulk.

## VIOLATES (1)
- Bulk advertising, link farms, "click here to win".

## SAFE (0)
- Personal messages, questions about spam filters.

## EXAMPLES
- "BUY CHEAP WATCHES www.example.com" → 1
- "can you help me set up a spam filter?" → 0
"""

# The guide's JSON answer: the instructions show the object the model must return.
GUIDE_JSON = """## INSTRUCTIONS
Decide whether the message is spam. Return exactly one JSON object:
{"violation": 1 or 0, "policy_category": "SP1" or "SP2" or null, "confidence": "low" or "medium" or "high"}

## DEFINITIONS
- SP1: bulk advertising. SP2: phishing.

## VIOLATES (1)
- SP1 or SP2.

## SAFE (0)
- Anything else.

## EXAMPLES
- "BUY CHEAP WATCHES www.example.com" → {"violation": 1, "policy_category": "SP1", "confidence": "high"}
"""

# A front matter and one `## Task` section of the author's own, the way the public study wrote its policies.
ONE_TASK_SECTION = """+++
name = "study_style"
[categories]
"0" = 0
"1" = 1
+++
## Task

You will be shown one user message from a chatbot log. Output exactly 0 or 1, where 0 means the message is
neither toxic nor a jailbreak and 1 means it is either.
"""


def test_a_guide_style_policy_without_front_matter_is_a_binary_0_1_policy(tmp_path):
    path = tmp_path / "spam_guide.md"
    path.write_text(GUIDE_BINARY, encoding="utf-8")
    policy = load_policy(str(path))
    assert policy.name == "spam_guide"
    assert policy.categories == (("0", 0), ("1", 1)) and policy.output == "label"
    assert policy.text == GUIDE_BINARY.strip()  # the whole file is the prompt text
    assert parse_verdict("1", policy).binary_label == 1
    assert parse_verdict("0", policy).binary_label == 0


def test_a_guide_style_policy_that_asks_for_the_guides_json_reads_json_answers():
    policy = parse_policy_text(GUIDE_JSON, default_name="spam_json")
    assert policy.output == "json" and policy.categories == (("0", 0), ("1", 1))
    flagged = parse_verdict('{"violation": 1, "policy_category": "SP2", "confidence": "high"}', policy)
    assert (flagged.binary_label, flagged.parse_ok, flagged.method) == (1, True, "json")
    cleared = parse_verdict('{"violation": 0, "policy_category": null, "confidence": "medium"}', policy)
    assert (cleared.binary_label, cleared.parse_ok) == (0, True)


@pytest.mark.parametrize("front_matter", ["+++\n+++\n", "+++\n\n+++\n", "+++\n# only a comment\n+++\n"])
def test_an_empty_front_matter_is_reported_as_empty_not_missing(front_matter):
    with pytest.raises(PolicyError) as info:
        parse_policy_text(front_matter + "## Task\nAnswer 0 or 1.\n", source="p.md")
    message = info.value.one_line()
    assert "policy p.md has an empty '+++' front matter" in message and "no '+++'" not in message


def test_section_headings_are_the_authors_choice():
    policy = parse_policy_text(ONE_TASK_SECTION)
    assert policy.name == "study_style" and policy.categories == (("0", 0), ("1", 1))
    assert policy.text.startswith("## Task\n\nYou will be shown one user message")
    assert "+++" not in policy.text


@pytest.mark.parametrize("text", [GUIDE_BINARY, ONE_TASK_SECTION])
def test_the_identity_follows_the_text(text):
    same = parse_policy_text(text)
    assert same.sha256 == parse_policy_text(text).sha256
    edited = parse_policy_text(text.replace("message", "text", 1))
    assert edited.text != same.text and edited.sha256 != same.sha256


def test_a_plain_policy_that_starts_asking_for_json_changes_identity():
    binary = parse_policy_text(GUIDE_BINARY)
    as_json = parse_policy_text(GUIDE_BINARY + 'Answer {"violation": 0 or 1}.\n')
    assert (binary.output, as_json.output) == ("label", "json") and binary.sha256 != as_json.sha256


@pytest.mark.parametrize("text,needle", [
    ("", "policy p.md is empty"),
    (" \n\t\n", "policy p.md is empty"),
    ("+++\nname = \"x\"\n## Task\nAnswer 0 or 1.\n", "opens a '+++' front matter that is never closed"),
    ("---\nname: mine\n---\n## Task\nAnswer 0 or 1.\n", "'---' (YAML) front matter"),
    ("+++\n[categories]\nok = 0\nbad = 1\n+++\n \n", "no text after its front matter"),
])
def test_truly_bad_policy_text_is_one_line_with_a_hint(text, needle):
    with pytest.raises(PolicyError) as info:
        parse_policy_text(text, source="p.md")
    assert needle in info.value.message and info.value.hint and "\n" not in info.value.one_line()
