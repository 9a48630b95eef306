"""Model output → verdict. Pure functions of the output text and the policy's label sets.

The parser never sees the user's input, so text injected into a prompt cannot steer it; where a format is
ambiguous (several final messages, several `assistantfinal` markers) the *last* one wins, because the model
writes its answer after anything it may have quoted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .policies import Policy

PARSER_VERSION = "1"
NO_FINAL_ANSWER = "no final answer (output ended in the analysis channel; raise max_new_tokens?)"

_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|return|>", "<|end|>", "<|call|>")
_HARMONY_MESSAGE = re.compile(
    r"<\|channel\|>\s*(?P<channel>[a-z]+)[^<]*?(?:<\|constrain\|>[^<]*)?<\|message\|>"
    r"(?P<body>.*?)(?P<stop><\|end\|>|<\|return\|>|<\|call\|>|<\|start\|>|$)",
    re.DOTALL,
)
_COLLAPSED_FINAL = "assistantfinal"


@dataclass(frozen=True)
class HarmonyParts:
    content: str
    reasoning: str
    format: str  # "harmony", "harmony-collapsed", "plain"
    has_final: bool = True
    truncated: bool = False


def split_output(text: str, harmony: bool | None = None) -> HarmonyParts:
    """Split raw model text into final content and reasoning (Harmony analysis channel).

    Handles the token form (`<|channel|>analysis<|message|>…<|end|>…<|channel|>final<|message|>…<|return|>`),
    the collapsed form servers return when they strip special tokens (`analysis…assistantfinal…`), and plain
    chat output (trailing end-of-turn tokens removed). Commentary channels are ignored.

    `harmony=False` (a model known not to speak Harmony): markers in its output are text it wrote, typically
    an echo of an injected user message, so they are never interpreted. `None`: unknown model, detect the form.
    """
    if harmony is not False:
        if "<|channel|>" in text:
            return _split_harmony_tokens(text)
        stripped = text.lstrip()
        if stripped.startswith("analysis") and (_COLLAPSED_FINAL in stripped or harmony):
            return _split_collapsed(stripped)
    return HarmonyParts(content=_strip_end_tokens(text), reasoning="", format="plain")


def _strip_end_tokens(text: str) -> str:
    text = text.strip()
    changed = True
    while changed:
        changed = False
        for token in _END_TOKENS:
            if text.endswith(token):
                text = text[: -len(token)].rstrip()
                changed = True
    return text


def _split_harmony_tokens(text: str) -> HarmonyParts:
    analysis: list[str] = []
    final: tuple[str, str] | None = None
    for m in _HARMONY_MESSAGE.finditer(text):
        channel, body, stop = m.group("channel"), m.group("body"), m.group("stop")
        if channel == "analysis":
            analysis.append(body.strip())
        elif channel == "final":
            final = (body, stop)
    reasoning = "\n".join(a for a in analysis if a)
    if final is None:
        return HarmonyParts(content="", reasoning=reasoning, format="harmony", has_final=False,
                            truncated=not text.rstrip().endswith(("<|end|>", "<|return|>", "<|call|>")))
    body, stop = final
    return HarmonyParts(content=body.strip(), reasoning=reasoning, format="harmony", has_final=True,
                        truncated=stop == "")


def _split_collapsed(text: str) -> HarmonyParts:
    idx = text.rfind(_COLLAPSED_FINAL)
    if idx < 0:
        return HarmonyParts(content="", reasoning=text[len("analysis"):].strip(), format="harmony-collapsed",
                            has_final=False, truncated=True)
    reasoning = text[len("analysis"):idx].strip()
    content = _strip_end_tokens(text[idx + len(_COLLAPSED_FINAL):])
    return HarmonyParts(content=content, reasoning=reasoning, format="harmony-collapsed")


@dataclass(frozen=True)
class Verdict:
    binary_label: int | None
    fine_grain_label: str | None
    parse_ok: bool
    parse_error: str | None = None
    refusal: bool = False
    method: str = "none"  # json | label | category | refusal | none


_FENCE = re.compile(r"\A```[a-zA-Z]*\s*\n?(.*?)\n?```\Z", re.DOTALL)
_LABEL_PREFIX = re.compile(r"\A(?:label|answer|output|classification|verdict|final answer)\s*[:=\-]\s*", re.I)
_REFUSAL = re.compile(
    r"\A(?:(?:I[’']?m|I am)\s+(?:really\s+|very\s+)?sorry\b[^\n]{0,80}?\b(?:can[’']?t|cannot|won[’']?t|unable|not able)\b"
    r"|sorry,?\s+(?:but\s+)?I\s+(?:can[’']?t|cannot|won[’']?t)\b"
    r"|I\s+(?:can[’']?t|cannot|won[’']?t|am unable to|am not able to)\s+(?:help|comply|assist|provide|do|fulfil|fulfill|continue|engage)\b)",
    re.IGNORECASE,
)
_BINARY_KEYS = ("violation", "binary_label", "label", "toxic", "is_toxic", "toxicity", "answer", "verdict")
_CATEGORY_KEYS = ("category", "fine_grain_label", "fine_grained_label", "fine_label", "type")
_MAX_REFUSAL_CHARS = 300


def _clean_token(text: str) -> str:
    text = _LABEL_PREFIX.sub("", text.strip())
    return text.strip().strip("*`\"'“”‘’").strip().rstrip(".").strip()


def _fine_for_binary(policy: Policy, binary: int) -> str | None:
    names = [name for name, value in policy.categories if value == binary]
    return names[0] if len(names) == 1 else None


def _as_binary(value: object) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false", "yes", "no"):
        return 1 if value.strip().lower() in ("1", "true", "yes") else 0
    return None


def _parse_json(obj: object, policy: Policy) -> Verdict:
    if not isinstance(obj, dict):
        return Verdict(None, None, False, f"JSON answer is a {type(obj).__name__}, not an object")
    lowered = {str(k).lower(): v for k, v in obj.items()}
    binary = next((b for k in _BINARY_KEYS if k in lowered and (b := _as_binary(lowered[k])) is not None), None)
    raw_category = next((lowered[k] for k in _CATEGORY_KEYS if isinstance(lowered.get(k), str)), None)
    category = policy.canonical_fine(raw_category) if raw_category is not None else None
    if binary is None and category is not None:
        binary = policy.binary_for(category)
    if binary is None:
        return Verdict(None, None, False, f"JSON answer has no 0/1 label under {'/'.join(_BINARY_KEYS[:3])}")
    if category is None:
        category = _fine_for_binary(policy, binary)
    return Verdict(binary, category, True, method="json")


def parse_verdict(content: str, policy: Policy) -> Verdict:
    """Final-channel text → label, refusal, or a parse failure with its reason."""
    text = content.strip()
    if not text:
        return Verdict(None, None, False, "empty answer")
    fenced = _FENCE.match(text)
    body = fenced.group(1).strip() if fenced else text
    if body.startswith("{"):
        try:
            return _parse_json(json.loads(body), policy)
        except json.JSONDecodeError as exc:
            return Verdict(None, None, False, f"malformed JSON answer: {exc.msg}")
    token = _clean_token(body)
    if token in ("0", "1"):
        binary = int(token)
        fine = policy.canonical_fine(token) or _fine_for_binary(policy, binary)
        return Verdict(binary, fine, True, method="label")
    category = policy.canonical_fine(token)
    if category is not None:
        return Verdict(policy.binary_for(category), category, True, method="category")
    if len(text) <= _MAX_REFUSAL_CHARS and _REFUSAL.match(text):
        return Verdict(None, None, False, "model refused to classify", refusal=True, method="refusal")
    if "\n" not in text and len(text) <= 40:
        return Verdict(None, None, False, f"answer {text!r} is not a policy label")
    return Verdict(None, None, False, f"no label in a {len(text)}-character answer")


def parse_output(raw_text: str, policy: Policy, harmony: bool | None = None) -> tuple[HarmonyParts, Verdict]:
    """Split then parse; a missing final message is a parse failure that keeps the reasoning."""
    parts = split_output(raw_text, harmony=harmony)
    if not parts.has_final:
        return parts, Verdict(None, None, False, NO_FINAL_ANSWER)
    return parts, parse_verdict(parts.content, policy)
