"""Prompt-token parity: does a backend's `usage.prompt_tokens` equal the token count of toxcmp's own render of the
same request, and, where it does not, which known render variant would explain the difference.

The cheapest evidence that a provider rendered another prompt (another date line, the policy as a second system
message, no `# Instructions` header, another reasoning line) is its prompt token count. Pure functions here: the
statistics over rows that carry both counts, and the list of render variants (`VARIANTS`) as edits of a render
(messages, template options, text). Rendering and counting need the model's tokenizer: `toxcmp.run.prompt_tokens`.

Row fields (tidy rows, `results.parquet`): `prompt_tokens` / `completion_tokens` (what the backend reported; None
when it reported none), `own_prompt_tokens` (toxcmp's render, counted with the model's tokenizer; None when no
tokenizer was available here), `prompt_variants` (the variants whose count equals the reported one, `,`-joined;
a combination of two is written `a+b`; "" when searched and nothing matched; None when not searched).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from toxcmp.analysis import metrics

NO_USAGE = "no usage reported"
NO_TOKENIZER = "toxcmp could not count its own render (no tokenizer for this model here)"
NO_ROWS = "no answered rows"
VARIANT_ROW_LIMIT = 200  # differing rows whose variants are searched per arm (singles); combinations: PAIR_ROW_LIMIT
PAIR_ROW_LIMIT = 20


# -- a render and its variants ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Render:
    """One way to render a request: the messages and template options given to the chat template (with the
    generation prompt), then edits of the text it returns, in order (an edit returns None when it does not apply)."""

    messages: tuple[tuple[str, str], ...]
    options: tuple[tuple[str, str], ...] = ()
    edits: tuple[Callable[[str], str | None], ...] = ()

    @classmethod
    def of(cls, messages: Sequence[Any], options: dict[str, Any] | None = None) -> Render:
        pairs = tuple((m["role"], m["content"]) if isinstance(m, dict) else (m[0], m[1]) for m in messages)
        return cls(pairs, tuple(sorted((options or {}).items())))

    def chat_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def template_options(self) -> dict[str, str]:
        return dict(self.options)

    def edited(self, text: str) -> str | None:
        for edit in self.edits:
            text = edit(text)
            if text is None:
                return None
        return text

    @property
    def policy(self) -> str | None:
        """The system (policy) message's text, when the request has one first."""
        return self.messages[0][1] if self.messages and self.messages[0][0] in ("system", "developer") else None


@dataclass(frozen=True)
class TemplateFacts:
    """What a variant may need to know about the model's chat template (found by rendering, in the run layer)."""

    default_system: str | None = None  # the system prompt the template writes when a request has none
    bos_token: str | None = None


@dataclass(frozen=True)
class Variant:
    name: str  # key in the summary and in `prompt_variants`
    title: str  # as the report says it: "matches: policy as a system message"
    group: str  # two variants of one group are never combined (two dates, two reasoning lines)
    make: Callable[[Render, TemplateFacts], list[Render]] = field(repr=False)

    @property
    def doc(self) -> str:
        return (self.make.__doc__ or "").strip()

    def renders(self, base: Render, facts: TemplateFacts) -> list[Render]:
        return self.make(base, facts)


VARIANTS: dict[str, Variant] = {}


def _variant(name: str, title: str, group: str):
    def register(make: Callable[[Render, TemplateFacts], list[Render]]):
        VARIANTS[name] = Variant(name, title, group, make)
        return make

    return register


def _with_edit(base: Render, edit: Callable[[str], str | None]) -> Render:
    return replace(base, edits=base.edits + (edit,))


_DATE_LINE = re.compile(r"Current date: [^\n]*\n")
_DATE = re.compile(r"(Current date: )(\d{4})-(\d{2})-(\d{2})")


@_variant("date_removed", "no date line", "date")
def _date_removed(base: Render, facts: TemplateFacts) -> list[Render]:
    """The `Current date: …` line of a Harmony system message left out (a server whose template has none, or
    that renders without `strftime_now`)."""
    def edit(text: str) -> str | None:
        return _DATE_LINE.sub("", text, count=1) if _DATE_LINE.search(text) else None

    return [_with_edit(base, edit)]


def _shift_date(days: int) -> Callable[[str], str | None]:
    def edit(text: str) -> str | None:
        found = _DATE.search(text)
        if not found:
            return None
        try:
            day = _dt.date(int(found.group(2)), int(found.group(3)), int(found.group(4))) + _dt.timedelta(days=days)
        except ValueError:
            return None
        return text[:found.start()] + f"{found.group(1)}{day.isoformat()}" + text[found.end():]

    return edit


@_variant("date_changed", "another date", "date")
def _date_changed(base: Render, facts: TemplateFacts) -> list[Render]:
    """Another date on the `Current date:` line (the day before or after: a server in another time zone, or a
    render on another day). A date of the same form nearly always has the same count: a match says so."""
    return [_with_edit(base, _shift_date(d)) for d in (-1, 1, -366)]


def _policy_header(text: str, policy: str) -> tuple[int, str] | None:
    """(start of the policy in `text`, the text between the last message start before it and the policy)."""
    at = text.find(policy)
    if at < 0:
        return None
    head = text[:at]
    start = max(head.rfind("<|start|>"), head.rfind("<|im_start|>"), head.rfind("<|start_header_id|>"))
    return at, head[start:] if start >= 0 else head[-64:]


@_variant("policy_as_system_message", "policy as a system message", "role")
def _policy_as_system(base: Render, facts: TemplateFacts) -> list[Render]:
    """The policy sent as a system message of its own where toxcmp's template makes it the developer message
    (Harmony: `<|start|>system<|message|>…` instead of `<|start|>developer<|message|>…`)."""
    policy = base.policy
    if not policy:
        return []

    def edit(text: str) -> str | None:
        found = _policy_header(text, policy)
        if not found or "developer" not in found[1]:
            return None
        k = text.rfind("developer", 0, found[0])
        return text[:k] + "system" + text[k + len("developer"):]

    return [_with_edit(base, edit)]


@_variant("policy_as_developer_message", "policy as a developer message", "role")
def _policy_as_developer(base: Render, facts: TemplateFacts) -> list[Render]:
    """The policy sent with the role `developer` instead of `system` (the template decides what that renders:
    gpt-oss's renders both alike; a ChatML template writes its default system prompt first, then a developer turn)."""
    if not base.messages or base.messages[0][0] != "system":
        return []
    return [replace(base, messages=(("developer", base.messages[0][1]),) + base.messages[1:])]


@_variant("no_instructions_header", "no `# Instructions` header", "header")
def _no_instructions(base: Render, facts: TemplateFacts) -> list[Render]:
    """The policy without the `# Instructions` heading gpt-oss's template puts before a developer message."""
    policy = base.policy
    if not policy:
        return []

    def edit(text: str) -> str | None:
        found = _policy_header(text, policy)
        if not found:
            return None
        at, header = found
        for heading in ("# Instructions\n\n", "# Instructions\n"):
            if header.endswith(heading):
                return text[:at - len(heading)] + text[at:]
        return None

    return [_with_edit(base, edit)]


def _reasoning(effort: str):
    def make(base: Render, facts: TemplateFacts) -> list[Render]:
        options = base.template_options()
        if "reasoning_effort" not in options or options["reasoning_effort"] == effort:
            return []
        return [replace(base, options=tuple(sorted({**options, "reasoning_effort": effort}.items())))]

    make.__doc__ = (f"`Reasoning: {effort}` in the system message instead of the requested effort (a server that "
                    f"ignores `reasoning_effort`{' and renders the template default' if effort == 'medium' else ''}).")
    return make


for _effort in ("low", "medium", "high"):
    _variant(f"reasoning_{_effort}", f"Reasoning: {_effort}", "reasoning")(_reasoning(_effort))


@_variant("default_system_prompt", "the template's default system prompt before the policy", "system")
def _default_system(base: Render, facts: TemplateFacts) -> list[Render]:
    """The chat template's default system prompt (SmolLM2's "You are a helpful AI assistant named SmolLM…") as a
    system message of its own before the policy: the policy becomes a second system message."""
    if not facts.default_system or not base.messages or base.messages[0][0] != "system":
        return []
    return [replace(base, messages=(("system", facts.default_system),) + base.messages)]


@_variant("policy_dropped", "no policy message", "system")
def _policy_dropped(base: Render, facts: TemplateFacts) -> list[Render]:
    """The policy message dropped (a server that ignores system messages); the template's default system prompt,
    if it has one, takes its place."""
    if not base.policy:
        return []
    return [replace(base, messages=base.messages[1:])]


@_variant("policy_in_user_message", "policy inside the user message", "system")
def _policy_in_user(base: Render, facts: TemplateFacts) -> list[Render]:
    """The policy merged into the user message, a blank line before the text (what templates without a system role
    do)."""
    if not base.policy or len(base.messages) < 2 or base.messages[1][0] != "user":
        return []
    merged = ("user", f"{base.policy}\n\n{base.messages[1][1]}")
    return [replace(base, messages=(merged,) + base.messages[2:])]


@_variant("bos_added", "a BOS token added in front", "bos")
def _bos_added(base: Render, facts: TemplateFacts) -> list[Render]:
    """One more beginning-of-sequence token in front of the rendered text (a server that adds one even when the
    template wrote one, as llama.cpp does when the GGUF says `add_bos_token`)."""
    if not facts.bos_token:
        return []
    return [_with_edit(base, lambda text: facts.bos_token + text)]


def candidates(base: Render, facts: TemplateFacts, pairs: bool = False,
               only: Sequence[str] | None = None) -> list[tuple[str, list[Render]]]:
    """(name, its renders) for every variant (or those named in `only`), and with `pairs` every combination of two
    of them from different groups (`a+b`: b's change applied to each of a's renders)."""
    singles = [(v.name, v.group, v.renders(base, facts)) for v in VARIANTS.values() if only is None or v.name in only]
    singles = [(n, g, r) for n, g, r in singles if r]
    if not pairs:
        return [(n, r) for n, _, r in singles]
    out = []
    for i, (name_a, group_a, renders_a) in enumerate(singles):
        for name_b, group_b, _ in singles[i + 1:]:
            if group_a == group_b:
                continue
            combined = [c for r in renders_a for c in VARIANTS[name_b].renders(r, facts)]
            if combined:
                out.append((f"{name_a}+{name_b}", combined))
    return out


def default_system_text(without_system: str, with_system: str, system_sentinel: str, user_sentinel: str) -> str | None:
    """The template's default system prompt, from two renders of one user message (`user_sentinel`): without a
    system message, and after a system message `system_sentinel`. The default is what the first render writes where
    the second writes the sentinel, between the same surroundings; None when the template writes none."""
    at_user = with_system.find(user_sentinel)
    at_sys = with_system.find(system_sentinel)
    at_user_alone = without_system.find(user_sentinel)
    if min(at_user, at_sys, at_user_alone) < 0 or at_sys > at_user:
        return None
    before, between = with_system[:at_sys], with_system[at_sys + len(system_sentinel):at_user]
    head = without_system[:at_user_alone]
    if not head.startswith(before) or not head.endswith(between) or len(head) <= len(before) + len(between):
        return None
    return head[len(before):len(head) - len(between)] or None


def title(name: str) -> str:
    """A variant (or an `a+b` combination) as the report says it."""
    return " + ".join(VARIANTS[n].title if n in VARIANTS else n for n in name.split("+"))


# -- statistics -----------------------------------------------------------------------------------------------

def token_count(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None  # NaN (a blank parquet cell) is no count


def parity(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One arm's prompt-token parity over its rows (repeat 0): how many reported a count, how many toxcmp counted,
    the share where the two are equal (Wilson 95 % CI; undefined, with `reason`, where no row has both), the
    difference reported − toxcmp's (min/median/max, rows by difference) and the variants that explain it."""
    answered = [r for r in rows if not r.get("error")]
    reported = [r for r in answered if token_count(r.get("prompt_tokens")) is not None]
    counted = [r for r in answered if token_count(r.get("own_prompt_tokens")) is not None]
    both = [r for r in reported if token_count(r.get("own_prompt_tokens")) is not None]
    reason = None
    if not answered:
        reason = NO_ROWS
    elif not reported:
        reason = NO_USAGE
    elif not both:
        reason = NO_TOKENIZER
    out: dict[str, Any] = {"answered": len(answered), "reported": len(reported), "counted": len(counted),
                           "compared": len(both), "equal": None, "difference": None, "variants": None,
                           "reason": reason}
    completion = [token_count(r.get("completion_tokens")) for r in answered]
    completion = [c for c in completion if c is not None]
    out["completion_tokens"] = ({"reported": len(completion), "min": min(completion),
                                 "median": statistics.median(completion), "max": max(completion)}
                                if completion else {"reported": 0, "reason": NO_USAGE})
    if not both:
        return out
    diffs = [token_count(r["prompt_tokens"]) - token_count(r["own_prompt_tokens"]) for r in both]
    equal = metrics.wilson(sum(d == 0 for d in diffs), len(diffs))
    out["equal"] = {"value": round(equal.value, 6), "low": round(equal.low, 6), "high": round(equal.high, 6),
                    "successes": equal.successes, "n": equal.n}
    by = {}
    for d in sorted(diffs):
        by[f"{d:+d}" if d else "0"] = by.get(f"{d:+d}" if d else "0", 0) + 1
    out["difference"] = {"min": min(diffs), "median": statistics.median(diffs), "max": max(diffs), "counts": by}
    differing = [r for r, d in zip(both, diffs) if d != 0]
    if differing:
        searched = [r for r in differing if r.get("prompt_variants") is not None]
        explained: dict[str, int] = {}
        for r in differing:
            for name in filter(None, (r.get("prompt_variants") or "").split(",")):
                explained[name] = explained.get(name, 0) + 1
        n_explained = sum(bool(r.get("prompt_variants")) for r in differing)
        out["variants"] = {"differing": len(differing), "searched": len(searched),
                           "explained": n_explained,
                           "explained_by": dict(sorted(explained.items(), key=lambda kv: (-kv[1], kv[0]))),
                           "titles": {name: title(name) for name in explained}}
    return out


def parity_by_arm(first: dict[str, Sequence[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """`parity` of every arm (its repeat-0 rows), by arm label."""
    return {label: parity(rows) for label, rows in first.items()}


def reported_usage(extra: dict[str, Any] | None) -> dict[str, int | None]:
    """`prompt_tokens` and `completion_tokens` as the backend reported them (`ModelResponse.extra`), for the tidy
    rows. A streamed answer whose server sent no usage (llama.cpp's server never does in a stream) has no counts:
    the api backend's `completion_tokens` is then its count of content chunks, an estimate, and is left out."""
    extra = extra or {}
    prompt, completion = token_count(extra.get("prompt_tokens")), token_count(extra.get("completion_tokens"))
    if extra.get("streamed") and prompt is None:
        completion = None
    return {"prompt_tokens": prompt, "completion_tokens": completion}
