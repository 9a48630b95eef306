"""Loading a model in process for the `local` backend: device and dtype, a process-wide cache of loaded models, the exact prompt text."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from toxcmp.domain.models import (
    ModelSpec,
    cached_commit,
    is_commit,
    materialize,
    resolved_revision,
)
from toxcmp.domain.prompting import RENDER_DATE_FORMAT, ChatRequest


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    source: str
    commit: str | None  # what was loaded: the Hub commit, "sha256:…" of a bundled GGUF, None for a local directory
    context_length: int


class LocalModelCache:
    """Process-wide: one load per (model, revision, dtype, device)."""

    _lock = threading.Lock()
    _models: dict[tuple[str, str, str, str], LoadedModel] = {}
    loads = 0  # how many real loads happened; tests use it to prove models are not loaded twice

    @classmethod
    def get(cls, spec: ModelSpec, device: str, dtype: str, cache_dir=None, commit: str | None = None) -> LoadedModel:
        """`commit`: the Hub commit to pin a first load to (what the caller keyed its cache on)."""
        key = (spec.model_id, spec.revision, dtype, device)
        with cls._lock:
            if key not in cls._models:
                from toxcmp import phases

                phases.phase(f"local: loading {spec.name} on {device}")
                cls._models[key] = _load(spec, device, dtype, cache_dir, commit)
                cls.loads += 1
            return cls._models[key]

    @classmethod
    def peek(cls, spec: ModelSpec, device: str, dtype: str) -> LoadedModel | None:
        """The loaded model, if it is loaded; never loads."""
        with cls._lock:
            return cls._models.get((spec.model_id, spec.revision, dtype, device))

    @classmethod
    def clear(cls) -> int:
        with cls._lock:
            n = len(cls._models)
            cls._models.clear()
        try:
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
        return n

    @classmethod
    def loaded(cls) -> list[tuple[str, str, str, str]]:
        return list(cls._models)


def _load(spec: ModelSpec, device: str, dtype: str, cache_dir, commit: str | None = None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = materialize(spec, cache_dir)
    hub = not (spec.only_here or spec.local_path)
    # A Hub load is pinned to the commit the cache was keyed on, so what is loaded is what the answers are filed
    # under even if the branch moves meanwhile; without one, the commit is resolved here.
    if hub and not is_commit(commit):
        commit = resolved_revision(spec, local_cache=True)
    commit = commit if hub and is_commit(commit) else None
    revision = (commit or spec.revision) if hub else None
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    torch_dtype = resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = {"revision": revision, "dtype": torch_dtype if dtype != "auto" or device == "cpu" else "auto"}
    if device.startswith("cuda"):
        kwargs["device_map"] = device
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if not device.startswith("cuda"):
        model = model.to(device)
    model.eval()
    config = model.config
    context = getattr(config, "max_position_embeddings", None) or getattr(tokenizer, "model_max_length", 2048)
    if spec.only_here:
        commit = resolved_revision(spec, ask_hub=False)
    elif hub and commit is None:
        commit = getattr(config, "_commit_hash", None) or cached_commit(spec.model_id, spec.revision)
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, dtype=str(model.dtype).replace("torch.", ""),
                       source=source, commit=commit, context_length=int(context))


# How a pinned render date reaches the template. transformers renders `strftime_now(fmt)` from the machine's clock
# (a global of its Jinja environment), and the real gpt-oss template calls it directly — `"Current date: " +
# strftime_now("%Y-%m-%d")`, no `date_string` it would honour. Template kwargs are reduced to plain data (no
# callables), so the template is handed in with a macro of the same name in front: it shadows the global and
# returns the pinned day in each format the template asks for (precomputed here, in Python). Everything else is
# the model's own template, rendered by the real `apply_chat_template`. A format that is not a literal is an error,
# never a silent "today".
_CLOCK_CALL = re.compile(r"""strftime_now\(\s*(["'])(.*?)\1\s*\)""")
_PINNED_CLOCK = ("{%- macro strftime_now(format) -%}"
                 "{%- if format in toxcmp_pinned_clock -%}{{- toxcmp_pinned_clock[format] -}}"
                 "{%- else -%}{{- raise_exception('toxcmp pins the render date only for strftime_now formats written "
                 "as literals') -}}{%- endif -%}{%- endmacro -%}")


def _template_kwargs(tokenizer: Any, request: ChatRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(request.template_options())
    if request.render_date:
        template = tokenizer.get_chat_template()
        if "strftime_now" in template:  # a template without a clock renders the same on any day
            day = datetime.strptime(request.render_date, RENDER_DATE_FORMAT)
            kwargs["chat_template"] = _PINNED_CLOCK + template
            kwargs["toxcmp_pinned_clock"] = {fmt: day.strftime(fmt) for _, fmt in _CLOCK_CALL.findall(template)}
    return kwargs


def render_prompt(tokenizer: Any, request: ChatRequest) -> str:
    """The exact text the model is fed (chat template applied, generation prompt added), its clock at
    `request.render_date` when that is set."""
    return tokenizer.apply_chat_template(request.chat_messages(), add_generation_prompt=True, tokenize=False,
                                         **_template_kwargs(tokenizer, request))
