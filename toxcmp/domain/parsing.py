"""Model output → verdict. Pure functions of the output text and the policy's label sets.

The parser never sees the user's input, so text injected into a prompt cannot steer it. Rules, in order:

1. **Shape.** What a server sent — the content as it arrived, and any reasoning it sent in a field of its own —
   is read by `read_answer` into final answer, reasoning and where the reasoning came from (`REASONING_SOURCES`):
   a `reasoning` / `reasoning_content` field beside plain content, Harmony token text in the content
   (`<|channel|>analysis<|message|>…<|end|>…<|channel|>final<|message|>…`), the collapsed
   `analysis…assistantfinal…` text, a leading `<think>…</think>` or `<reasoning>…</reasoning>` block, or plain
   content. A marker inside quoted or code text (`'…'`, `"…"`, `“…”`, `` `…` ``, fenced blocks) is something the
   model quoted, not structure, and is ignored; among the remaining final markers the *last* one wins, because
   the model writes its answer after anything it quoted in its reasoning. (When every marker is quoted, the last
   one is used, as before.) No final answer (reasoning only) is `no_final`, or `truncated` when cut off.
2. **JSON.** A leading JSON object (fenced or not, prose after it allowed) is read by its documented keys only:
   binary under `violation`/`label`/…, category under `category`/`fine_grain_label`/…. A key given twice (in
   any letter case) with different values is `ambiguous`; a binary that contradicts the category's binary, or
   two binary keys that disagree, is `inconsistent`. Neither is resolved by picking one.
3. **Label line.** The first line is the label when, after markdown emphasis, a `Label:`/`**Answer:**`-style
   prefix and a trailing gloss in parentheses (`1 (toxic)`) are removed, it is exactly a policy label. Later
   lines may explain it (`Label: 1\\nReason: …`), but a later line that is itself a different label makes the
   answer `inconsistent`. Quoted and fenced text never counts.
4. **Committed label at the end.** One short line that ends in a label after a committing word (`…, so: 1`,
   `leaning 1.`, `I'd say 1.`) and mentions no other label is that label.
5. **Refusal.** Only an answer that commits to no label can be a refusal (it declines *and* gives no verdict).
6. Anything else is unparsed, with its reason; prose that merely mentions 0, 1 or a category stays unparsed.
   An unparsed or empty answer cut off by the token budget (`finish_reason == "length"`) is `truncated`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

from toxcmp.domain.policies import Policy

PARSER_VERSION = "3"  # 3: think/reasoning tags; raw text is the content as sent (part of the cache key)
NO_FINAL_ANSWER = "no final answer (the output ended in its reasoning; if it was cut off, raise --max-new-tokens)"
TRUNCATED = "truncated: the answer was cut off by the token budget (raise --max-new-tokens)"

# Where an answer's reasoning came from (`HarmonyParts.source`, recorded as `reasoning_source`). `field`: a field
# or column whose name was not recorded (a study file's reasoning column, a row from an older toxcmp).
REASONING_FIELDS = ("reasoning", "reasoning_content")
REASONING_SOURCES = ("field:reasoning", "field:reasoning_content", "harmony", "collapsed", "think_tag",
                     "reasoning_tag", "none", "field")
_FORMAT_SOURCE = {"harmony": "harmony", "harmony-collapsed": "collapsed", "think-tag": "think_tag",
                  "reasoning-tag": "reasoning_tag"}
_TAGS = {"think-tag": ("<think>", "</think>"), "reasoning-tag": ("<reasoning>", "</reasoning>")}

_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|return|>", "<|end|>", "<|call|>")
_MESSAGE_STOPS = ("<|end|>", "<|return|>", "<|call|>", "<|start|>")
_HARMONY_MESSAGE = re.compile(
    r"<\|channel\|>\s*(?P<channel>[a-z]+)[^<]*?(?:<\|constrain\|>[^<]*)?<\|message\|>"
    r"(?P<body>.*?)(?P<stop><\|end\|>|<\|return\|>|<\|call\|>|<\|start\|>|$)",
    re.DOTALL,
)
_COLLAPSED_FINAL = "assistantfinal"
HARMONY_FINAL = "<|channel|>final<|message|>"  # the header before gpt-oss's final answer, in the token form


# -- quoted text -------------------------------------------------------------------------------------------------

_QUOTED = re.compile(
    r"```.*?```"                      # fenced block
    r"|`[^`\n]*`"                     # inline code
    r"|\"[^\"\n]*\""                  # "…"
    r"|“[^”\n]*”|‘[^’\n]*’|«[^»\n]*»"  # typographic quotes
    r"|(?<![\w'])'[^'\n]*'(?![\w'])",  # '…' (an apostrophe inside a word does not open a quote)
    re.DOTALL,
)


def quoted_spans(text: str, within_message: bool = False) -> list[tuple[int, int]]:
    """Spans of quoted or code text. `within_message`: a span never crosses a Harmony message boundary."""
    spans = []
    for m in _QUOTED.finditer(text):
        if within_message and any(stop in m.group(0) for stop in _MESSAGE_STOPS):
            continue
        spans.append(m.span())
    return spans


def _inside(pos: int, spans: list[tuple[int, int]]) -> bool:
    return any(lo <= pos < hi for lo, hi in spans)


def _unquoted_finds(text: str, needle: str, spans: list[tuple[int, int]]) -> list[int]:
    found, at = [], text.find(needle)
    while at >= 0:
        if not _inside(at, spans):
            found.append(at)
        at = text.find(needle, at + 1)
    return found


def _blank_quoted(text: str) -> str:
    """The text with quoted/code spans replaced by spaces (same length): what the model said in its own voice."""
    out = list(text)
    for lo, hi in quoted_spans(text):
        out[lo:hi] = " " * (hi - lo)
    return "".join(out)


# -- channels ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HarmonyParts:
    content: str
    reasoning: str
    format: str  # "harmony", "harmony-collapsed", "think-tag", "reasoning-tag", "plain"
    has_final: bool = True
    truncated: bool = False
    source: str = ""  # where the reasoning came from (REASONING_SOURCES); "" until read_answer fills it in


def split_output(text: str, harmony: bool | None = None) -> HarmonyParts:
    """Split raw model text into final content and reasoning (Harmony analysis channel).

    Handles the token form (`<|channel|>analysis<|message|>…<|end|>…<|channel|>final<|message|>…<|return|>`),
    the collapsed form servers return when they strip special tokens (`analysis…assistantfinal…`), a leading
    `<think>…</think>` or `<reasoning>…</reasoning>` block (servers that return reasoning raw), and plain chat
    output (trailing end-of-turn tokens removed). Commentary channels are ignored.

    `harmony=False` (a model known not to speak Harmony): markers in its output are text it wrote, typically
    an echo of an injected user message, so they are never interpreted. `None`: unknown model, detect the form.
    """
    if harmony is not False:
        stripped = text.lstrip()
        for form, (open_tag, close_tag) in _TAGS.items():
            if stripped.startswith(open_tag):
                return _split_tagged(stripped[len(open_tag):], close_tag, form)
        collapsed = stripped.startswith("analysis") and _COLLAPSED_FINAL in stripped
        if not collapsed and _unquoted_finds(text, "<|channel|>", quoted_spans(text, within_message=True)):
            return _split_harmony_tokens(text)
        if stripped.startswith("analysis") and (collapsed or harmony):
            return _split_collapsed(stripped)
        if harmony and "<|channel|>" in text:  # every marker quoted, yet the model speaks Harmony
            return _split_harmony_tokens(text)
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


def _harmony_messages(text: str) -> list[re.Match[str]]:
    spans = quoted_spans(text, within_message=True)
    found: list[re.Match[str]] = []
    pos = 0
    while (m := _HARMONY_MESSAGE.search(text, pos)) is not None:
        if _inside(m.start(), spans):  # a quoted marker: part of the text around it, not a message
            pos = m.start() + 1
            continue
        found.append(m)
        pos = max(m.end(), m.start() + 1)
    if not found:  # every marker quoted: fall back to reading them all
        found = list(_HARMONY_MESSAGE.finditer(text))
    return found


def _split_harmony_tokens(text: str) -> HarmonyParts:
    analysis: list[str] = []
    final: tuple[str, str] | None = None
    for m in _harmony_messages(text):
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
    markers = _unquoted_finds(text, _COLLAPSED_FINAL, quoted_spans(text)) or _unquoted_finds(text, _COLLAPSED_FINAL, [])
    if not markers:
        return HarmonyParts(content="", reasoning=text[len("analysis"):].strip(), format="harmony-collapsed",
                            has_final=False, truncated=True)
    idx = markers[-1]
    reasoning = text[len("analysis"):idx].strip()
    content = _strip_end_tokens(text[idx + len(_COLLAPSED_FINAL):])
    return HarmonyParts(content=content, reasoning=reasoning, format="harmony-collapsed")


def _split_tagged(body: str, close_tag: str, form: str) -> HarmonyParts:
    """`body`: the text after a leading `<think>`/`<reasoning>`; the answer follows the last unquoted close tag."""
    closes = _unquoted_finds(body, close_tag, quoted_spans(body)) or _unquoted_finds(body, close_tag, [])
    if not closes:
        return HarmonyParts(content="", reasoning=body.strip(), format=form, has_final=False, truncated=True)
    idx = closes[-1]
    return HarmonyParts(content=_strip_end_tokens(body[idx + len(close_tag):]), reasoning=body[:idx].strip(),
                        format=form)


def read_answer(content: str, reasoning: str | None = None, reasoning_field: str | None = None,
                harmony: bool | None = None, split: bool = True) -> HarmonyParts:
    """One answer as it arrived → its final answer, its reasoning and where that came from (`source`).

    `content`: the text exactly as the server sent it (a local model's decoded output). `reasoning`: what a
    server sent in a field of its own (`reasoning_field`: the field's name, None when not recorded). The content
    is split as `split_output` does; reasoning sent in a field wins over reasoning split out of the content. An
    empty answer beside reasoning is no final answer (`has_final` False). `split=False`: `content` is a final
    answer already split out (a study file's response column as toxcmp stored it), read as it is."""
    parts = split_output(content or "", harmony=harmony) if split else HarmonyParts(content or "", "", "plain")
    sent = (reasoning or "").strip()
    if sent:
        name = reasoning_field if reasoning_field in REASONING_FIELDS else None
        parts = replace(parts, reasoning=reasoning or "", source=f"field:{name}" if name else "field")
    else:
        parts = replace(parts, source=_FORMAT_SOURCE.get(parts.format, "none") if parts.reasoning.strip() else "none")
    if parts.format == "plain" and not parts.content.strip() and parts.reasoning.strip():
        parts = replace(parts, has_final=False)
    return parts


def recorded_source(raw: str | None, reasoning: str | None, harmony: bool | None = None) -> str:
    """The reasoning source of a recorded answer that did not record one: the shape of its raw text, else
    `field` when reasoning was recorded beside it (the field's name unknown), else `none`."""
    split = read_answer(raw or "", harmony=harmony).source
    return split if split != "none" else ("field" if (reasoning or "").strip() else "none")


# -- verdicts ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    binary_label: int | None
    fine_grain_label: str | None
    parse_ok: bool
    parse_error: str | None = None
    refusal: bool = False
    method: str = "none"  # json | label | category | committed | refusal | none
    failure: str | None = None  # why there is no label, as a short code (see FAILURES)


# Every way an answer can fail to give a label, as counted in the report.
FAILURES = ("empty", "refusal", "inconsistent", "ambiguous", "malformed_json", "not_a_label", "no_label",
            "no_final", "truncated")


def _fail(code: str, reason: str) -> Verdict:
    return Verdict(None, None, False, reason, refusal=code == "refusal",
                   method="refusal" if code == "refusal" else "none", failure=code)


_FENCE = re.compile(r"\A```[a-zA-Z]*[ \t]*\n?(.*?)\n?```", re.DOTALL)
_EMPHASIS = re.compile(r"\*\*|__|`")
_LABEL_PREFIX = re.compile(
    r"\A(?:the\s+)?(?:label|answer|output|classification|verdict|final answer|final label|prediction)\s*(?:is)?\s*[:=\-]?\s*", re.I)
_GLOSS = re.compile(r"\s*[(\[][^()\[\]\n]{1,40}[)\]]\Z")
_REFUSAL = re.compile(
    r"\A(?:(?:I[’']?m|I am)\s+(?:really\s+|very\s+)?sorry\b[^\n]{0,80}?\b(?:can[’']?t|cannot|won[’']?t|unable|not able)\b"
    r"|sorry,?\s+(?:but\s+)?I\s+(?:can[’']?t|cannot|won[’']?t)\b"
    r"|I\s+(?:can[’']?t|cannot|won[’']?t|am unable to|am not able to)\s+"
    r"(?:help(?!\s+but\b)|comply|assist|provide|do|fulfil|fulfill|continue|engage)\b)",
    re.IGNORECASE,
)
_COMMITTED = re.compile(
    r"(?:[:=→]|\b(?:say|saying|leaning|lean|towards?|answer|label|verdict|so|therefore|thus|classify|classified"
    r"|rate|rating|is|as))\s*[*`\"'“”]*(?P<label>[01])[*`\"'“”]*\s*[.!]?\s*\Z", re.I)
_BARE_DIGIT = re.compile(r"(?<![\w.,])[01](?![\w,]|\.\d)")
BINARY_KEYS = ("violation", "binary_label", "label", "toxic", "is_toxic", "toxicity", "answer", "verdict")
_CATEGORY_KEYS = ("category", "fine_grain_label", "fine_grained_label", "fine_label")
_MAX_REFUSAL_CHARS = 300
_MAX_COMMITTED_CHARS = 200


def _clean_token(text: str) -> str:
    text = _EMPHASIS.sub("", text.strip())
    text = _LABEL_PREFIX.sub("", text.strip())
    text = text.strip().strip("\"'“”‘’").strip().rstrip(".").strip()
    return text


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


class _Ambiguous(ValueError):
    pass


def _no_conflicting_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        low = str(key).lower()
        if low in out and out[low] != value:
            raise _Ambiguous(f"key {low!r} is given twice with different values")
        out[low] = value
    return out


def _parse_json(obj: object, policy: Policy) -> Verdict:
    if not isinstance(obj, dict):
        return _fail("not_a_label", f"JSON answer is a {type(obj).__name__}, not an object")
    binaries = {k: b for k in BINARY_KEYS if k in obj and (b := _as_binary(obj[k])) is not None}
    if len(set(binaries.values())) > 1:
        return _fail("inconsistent", f"inconsistent answer: {', '.join(f'{k}={v}' for k, v in binaries.items())}")
    binary = next(iter(binaries.values()), None)
    raw_category = next((obj[k] for k in _CATEGORY_KEYS if isinstance(obj.get(k), str)), None)
    category = policy.canonical_fine(raw_category) if raw_category is not None else None
    if category is not None and binary is not None and policy.binary_for(category) != binary:
        return _fail("inconsistent", f"inconsistent answer: label {binary} but category {category!r} "
                                     f"means {policy.binary_for(category)}")
    if binary is None and category is not None:
        binary = policy.binary_for(category)
    if binary is None:
        return _fail("no_label", f"JSON answer has no 0/1 label under {'/'.join(BINARY_KEYS[:3])}")
    if category is None:
        category = _fine_for_binary(policy, binary)
    return Verdict(binary, category, True, method="json")


def _leading_json(body: str) -> tuple[object, str] | None:
    """The JSON object an answer starts with and the text after it; None when it does not start with one."""
    try:
        obj, end = json.JSONDecoder(object_pairs_hook=_no_conflicting_keys).raw_decode(body)
    except json.JSONDecodeError:
        return None
    return obj, body[end:]


def _line_label(line: str, policy: Policy) -> Verdict | None:
    token = _clean_token(line)
    token = _GLOSS.sub("", token).strip().rstrip(".").strip() if _GLOSS.search(token) else token
    gloss = _GLOSS.search(_clean_token(line))
    if token in ("0", "1"):
        binary = int(token)
        fine = policy.canonical_fine(token) or _fine_for_binary(policy, binary)
        if gloss:
            named = policy.canonical_fine(gloss.group(0).strip(" ()[]"))
            if named is not None and policy.binary_for(named) != binary:
                return _fail("inconsistent", f"inconsistent answer: label {binary} glossed as {named!r}")
            fine = named if named is not None else fine
        return Verdict(binary, fine, True, method="label")
    category = policy.canonical_fine(token)
    if category is not None:
        return Verdict(policy.binary_for(category), category, True, method="category")
    return None


def _label_lines(text: str, policy: Policy) -> list[Verdict]:
    """Labels stated as a whole line, in the model's own voice (quoted and fenced text blanked out)."""
    found = []
    for line in _blank_quoted(text).splitlines():
        if line.strip() and (v := _line_label(line, policy)) is not None:
            found.append(v)
    return found


def _committed_label(text: str, policy: Policy) -> Verdict | None:
    own = _blank_quoted(text).strip()
    if "\n" in own or len(own) > _MAX_COMMITTED_CHARS:
        return None
    m = _COMMITTED.search(_EMPHASIS.sub("", own))
    if not m or len(set(_BARE_DIGIT.findall(own))) != 1:
        return None
    binary = int(m.group("label"))
    return Verdict(binary, policy.canonical_fine(str(binary)) or _fine_for_binary(policy, binary), True,
                   method="committed")


def parse_verdict(content: str, policy: Policy, finish_reason: str | None = None) -> Verdict:
    """Final-channel text → label, refusal, or a parse failure with its reason (see the module docstring)."""
    verdict = _parse(content, policy)
    if not verdict.parse_ok and not verdict.refusal and finish_reason == "length":
        return replace(verdict, parse_error=f"{TRUNCATED}; {verdict.parse_error}", failure="truncated")
    return verdict


def _parse(content: str, policy: Policy) -> Verdict:
    text = content.strip()
    if not text:
        return _fail("empty", "empty answer")
    fenced = _FENCE.match(text)
    body = fenced.group(1).strip() if fenced else text
    if body.startswith("{"):
        try:
            leading = _leading_json(body)
        except _Ambiguous as exc:
            return _fail("ambiguous", f"ambiguous answer: {exc}")
        if leading is None:
            try:
                json.loads(body)
            except json.JSONDecodeError as exc:
                return _fail("malformed_json", f"malformed JSON answer: {exc.msg}")
        assert leading is not None
        return _parse_json(leading[0], policy)
    first, _, rest = text.partition("\n")
    head = _line_label(first, policy)
    if head is not None:
        if not head.parse_ok:
            return head
        others = {v.binary_label for v in _label_lines(rest, policy) if v.parse_ok}
        if others - {head.binary_label}:
            return _fail("inconsistent", f"inconsistent answer: first line says {head.binary_label}, a later line "
                                         f"says {sorted(others - {head.binary_label})[0]}")
        return head
    committed = _committed_label(text, policy)
    if committed is not None:
        return committed
    if len(text) <= _MAX_REFUSAL_CHARS and _REFUSAL.match(text):
        return _fail("refusal", "model refused to classify")
    if "\n" not in text and len(text) <= 40:
        return _fail("not_a_label", f"answer {text!r} is not a policy label")
    return _fail("no_label", f"no label in a {len(text)}-character answer")


def parse_output(raw_text: str, policy: Policy, harmony: bool | None = None, finish_reason: str | None = None,
                 reasoning: str | None = None, reasoning_field: str | None = None) -> tuple[HarmonyParts, Verdict]:
    """Read (`read_answer`) then parse; a missing final answer is a parse failure that keeps the reasoning:
    `truncated` when the token budget cut it off, else `no_final`. The one function every path shares: the
    live backends, `recorded` and `rescore`."""
    parts = read_answer(raw_text, reasoning, reasoning_field, harmony)
    return parts, verdict_of(parts, policy, finish_reason)


def verdict_of(parts: HarmonyParts, policy: Policy, finish_reason: str | None = None) -> Verdict:
    """The verdict of an answer already read."""
    if not parts.has_final:
        if finish_reason == "length":
            return _fail("truncated", f"{TRUNCATED}; {NO_FINAL_ANSWER}")
        return _fail("no_final", NO_FINAL_ANSWER)
    return parse_verdict(parts.content, policy, finish_reason)
