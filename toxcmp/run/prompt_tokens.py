"""Prompt-token parity, the part that needs the model's tokenizer: count toxcmp's own render of each row's request
(the chat template with the generation prompt, exactly as the local backend feeds it) and, where a backend
reported another count, render the known variants (`toxcmp.analysis.prompt_tokens.VARIANTS`) and name those
whose count matches. Only the tokenizer is loaded (never weights), and only from this machine (never a download).
The statistics are `toxcmp.analysis.prompt_tokens.parity`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from toxcmp.analysis.prompt_tokens import (
    PAIR_ROW_LIMIT,
    VARIANT_ROW_LIMIT,
    Render,
    TemplateFacts,
    candidates,
    default_system_text,
    token_count,
)
from toxcmp.domain.models import ModelSpec
from toxcmp.domain.prompting import ChatRequest

_SYSTEM_SENTINEL = "\u27e6toxcmp system\u27e7"
_USER_SENTINEL = "\u27e6toxcmp user\u27e7"


def load_tokenizer(spec: ModelSpec, cache_dir: Path | None = None) -> tuple[Any | None, str]:
    """(the model's tokenizer, where it came from), or (None, why there is none here). Tried in order: a model
    this process has loaded already, a converted bundled/GGUF model, the GGUF file's own tokenizer (no weights), a
    local model directory, the local Hugging Face cache (`local_files_only`: never a download)."""
    from toxcmp.backends.local_model import LocalModelCache

    for model_id, revision, dtype, device in LocalModelCache.loaded():
        if (model_id, revision) == (spec.model_id, spec.revision):
            loaded = LocalModelCache.peek(spec, device, dtype)
            if loaded is not None:
                return loaded.tokenizer, f"the loaded model ({loaded.source})"
    try:
        from transformers import AutoTokenizer

        if spec.only_here:
            from toxcmp.domain.models import bundled_gguf_path, converted_dir

            converted = converted_dir(spec, cache_dir)
            if (converted / "tokenizer_config.json").is_file():
                return AutoTokenizer.from_pretrained(str(converted)), str(converted)
            gguf = Path(spec.gguf_path) if spec.gguf_path else bundled_gguf_path(spec)
            return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name), f"{gguf.name} (tokenizer only)"
        if spec.local_path:
            return AutoTokenizer.from_pretrained(spec.local_path), spec.local_path
        return (AutoTokenizer.from_pretrained(spec.model_id, revision=spec.revision, local_files_only=True),
                f"{spec.model_id} (local Hugging Face cache)")
    except Exception as exc:  # noqa: BLE001 - no tokenizer here is an answer, not a failure
        return None, f"no tokenizer for {spec.name} here ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"


def render_text(tokenizer: Any, request: ChatRequest, render: Render) -> str | None:
    """The text of one render of `request` (None: one of its edits does not apply to this template's output):
    its messages and template options through the local backend's own renderer (so the render date is the
    request's), then its edits."""
    from toxcmp.backends.local_model import render_prompt

    generation = replace(request.generation, **render.template_options())
    return render.edited(render_prompt(tokenizer, replace(request, messages=render.messages, generation=generation)))


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of a rendered prompt as the local backend feeds it (the template writes any special tokens)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def own_count(tokenizer: Any, request: ChatRequest) -> int:
    """toxcmp's own render of `request`, counted: the local backend's exact prompt."""
    from toxcmp.backends.local_model import render_prompt

    return count_tokens(tokenizer, render_prompt(tokenizer, request))


def template_facts(tokenizer: Any) -> TemplateFacts:
    """The template's default system prompt (rendered with and without a system message) and its BOS token."""
    user = [{"role": "user", "content": _USER_SENTINEL}]
    try:
        alone = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        after = tokenizer.apply_chat_template([{"role": "system", "content": _SYSTEM_SENTINEL}, *user],
                                              add_generation_prompt=True, tokenize=False)
        default = default_system_text(alone, after, _SYSTEM_SENTINEL, _USER_SENTINEL)
    except Exception:  # noqa: BLE001 - a template that refuses these messages has no default to find
        default = None
    return TemplateFacts(default_system=default, bos_token=getattr(tokenizer, "bos_token", None) or None)


def matching_variants(tokenizer: Any, request: ChatRequest, reported: int, facts: TemplateFacts,
                      pairs: bool = False) -> list[str]:
    """The variants whose render of `request` has `reported` tokens; with `pairs`, if none does, the combinations
    of two. A variant whose text equals toxcmp's own render (it does not apply to this template) explains no
    difference and is never named, nor combined."""
    from toxcmp.backends.local_model import render_prompt

    ours = render_prompt(tokenizer, request)
    base = Render.of(request.chat_messages(), request.template_options())
    applies: list[str] = []

    def matches(named: list[tuple[str, list[Render]]]) -> list[str]:
        found = []
        for name, renders in named:
            for render in renders:
                try:
                    text = render_text(tokenizer, request, render)
                except Exception:  # noqa: BLE001 - a template that refuses this variant's messages: not this one
                    text = None
                if text is None or text == ours:
                    continue
                if name not in applies:
                    applies.append(name)
                if count_tokens(tokenizer, text) == reported:
                    found.append(name)
                    break
        return found

    found = matches(candidates(base, facts))
    if found or not pairs:
        return found
    return matches(candidates(base, facts, pairs=True, only=list(applies)))


def add_prompt_token_counts(tidy: Sequence[dict[str, Any]], arms: Sequence[Any],
                            requests: Sequence[Sequence[ChatRequest | None]], examples: Sequence[dict[str, Any]],
                            observer: Any = None, cache_dir: Path | None = None) -> dict[str, str]:
    """Fill `own_prompt_tokens` (and, where the reported count differs, `prompt_variants`) into the tidy rows of
    every arm that reported prompt tokens. Returns a note per arm: the tokenizer used, or why none was."""
    notes: dict[str, str] = {}
    tokenizers: dict[ModelSpec, tuple[Any | None, str]] = {}
    for k, arm in enumerate(arms):
        rows = [r for r in tidy if r.get("arm") == arm.label and not r.get("error")]
        if not any(token_count(r.get("prompt_tokens")) is not None for r in rows):
            continue
        if arm.model not in tokenizers:
            tokenizers[arm.model] = load_tokenizer(arm.model, cache_dir)
        tokenizer, source = tokenizers[arm.model]
        notes[arm.label] = source
        if tokenizer is None:
            if observer is not None:
                observer.log(f"prompt tokens of {arm.label}: {source}; parity not measured")
            continue
        by_id = {ex["example_id"]: req for ex, req in zip(examples, requests[k]) if req is not None}
        own: dict[str, int] = {}
        for row in rows:
            request = by_id.get(row["example_id"])
            if request is None:
                continue
            if row["example_id"] not in own:
                own[row["example_id"]] = own_count(tokenizer, request)
            row["own_prompt_tokens"] = own[row["example_id"]]
        differing = [r for r in rows if token_count(r.get("prompt_tokens")) is not None
                     and r.get("own_prompt_tokens") is not None and token_count(r["prompt_tokens"]) != r["own_prompt_tokens"]]
        if differing:
            _search(tokenizer, differing, by_id, observer, arm.label)
    return notes


def _search(tokenizer: Any, differing: list[dict[str, Any]], by_id: dict[str, ChatRequest], observer: Any,
            label: str) -> None:
    """Variants for up to VARIANT_ROW_LIMIT differing rows, then combinations of two for up to PAIR_ROW_LIMIT of
    those no single variant explains. A searched row gets its matches, or "" for none; others stay None."""
    facts = template_facts(tokenizer)
    if observer is not None:
        observer.phase(f"prompt tokens of {label}: {len(differing)} row(s) differ; trying known render variants",
                       detail=True)
    found: dict[tuple[str, int], str] = {}
    pairs_tried = 0
    for row in differing:
        key = (row["example_id"], token_count(row["prompt_tokens"]))
        if key not in found:
            if len(found) >= VARIANT_ROW_LIMIT:
                continue
            names = matching_variants(tokenizer, by_id[row["example_id"]], key[1], facts,
                                      pairs=pairs_tried < PAIR_ROW_LIMIT)
            pairs_tried += not names or "+" in ",".join(names)
            found[key] = ",".join(names)
        row["prompt_variants"] = found[key]
