"""`local` backend: transformers `apply_chat_template` + `generate`, greedy by default."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import ContextLengthError
from ..models import ModelSpec, materialize
from ..parsing import split_output
from ..prompting import ChatRequest
from ..results import ModelResponse
from . import BackendConfig, OnResponse

log = logging.getLogger(__name__)


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
    commit: str | None
    context_length: int


class LocalModelCache:
    """Process-wide: one load per (model, revision, dtype, device)."""

    _lock = threading.Lock()
    _models: dict[tuple[str, str, str, str], LoadedModel] = {}
    loads = 0  # how many real loads happened; tests use it to prove models are not loaded twice

    @classmethod
    def get(cls, spec: ModelSpec, device: str, dtype: str, cache_dir=None) -> LoadedModel:
        key = (spec.model_id, spec.revision, dtype, device)
        with cls._lock:
            if key not in cls._models:
                cls._models[key] = _load(spec, device, dtype, cache_dir)
                cls.loads += 1
            return cls._models[key]

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


def _load(spec: ModelSpec, device: str, dtype: str, cache_dir) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = materialize(spec, cache_dir)
    revision = None if spec.is_bundled or spec.local_path else spec.revision
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
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, dtype=str(model.dtype).replace("torch.", ""),
                       source=source, commit=getattr(config, "_commit_hash", None), context_length=int(context))


def render_prompt(tokenizer: Any, request: ChatRequest) -> str:
    """The exact text the model is fed (chat template applied, generation prompt added)."""
    return tokenizer.apply_chat_template(request.chat_messages(), add_generation_prompt=True, tokenize=False,
                                         **request.template_options())


class LocalBackend:
    name = "local"

    def __init__(self, config: BackendConfig):
        self.config = config
        self.device = resolve_device(config.device)

    @property
    def endpoint(self) -> str:
        return f"transformers:{self.device}:{self.config.dtype}"

    def load(self, spec: ModelSpec) -> LoadedModel:
        return LocalModelCache.get(spec, self.device, self.config.dtype, self.config.cache_dir)

    def render(self, request: ChatRequest) -> str:
        return render_prompt(self.load(request.model).tokenizer, request)

    def generate(self, requests: Sequence[ChatRequest], on_response: OnResponse | None = None) -> list[ModelResponse]:
        out: list[ModelResponse] = []
        for index, request in enumerate(requests):
            response = self._generate_one(request)
            out.append(response)
            if on_response:
                on_response(index, response)
        return out

    def _generate_one(self, request: ChatRequest) -> ModelResponse:
        import torch

        loaded = self.load(request.model)
        tok = loaded.tokenizer
        started = time.perf_counter()
        try:
            prompt = render_prompt(tok, request)
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False).to(loaded.device)
            n_prompt = int(enc["input_ids"].shape[1])
            gen = request.generation
            if n_prompt + gen.max_new_tokens > loaded.context_length:
                raise ContextLengthError(
                    f"prompt is {n_prompt} tokens; with max_new_tokens={gen.max_new_tokens} it exceeds the model's "
                    f"{loaded.context_length}-token context", "shorten the text or lower --max-new-tokens")
            kwargs: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens,
                                      "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}
            if gen.greedy:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                if gen.seed is not None:
                    torch.manual_seed(gen.seed)
                kwargs.update(do_sample=True, temperature=gen.temperature, top_p=gen.top_p)
            with torch.inference_mode():
                output = loaded.model.generate(**enc, **kwargs)
            new_tokens = output[0, n_prompt:]
            raw = tok.decode(new_tokens, skip_special_tokens=False)
            eos_ids = _eos_ids(loaded)
            finish = "stop" if len(new_tokens) and int(new_tokens[-1]) in eos_ids else "length"
            parts = split_output(raw, harmony=request.model.harmony)
            return ModelResponse(content=parts.content, reasoning=parts.reasoning, raw_text=raw, backend=self.name,
                                 model=request.model.model_id, latency_s=time.perf_counter() - started,
                                 served_by=self.endpoint, finish_reason=finish, prompt_hash=request.prompt_hash,
                                 extra={"prompt_tokens": n_prompt, "completion_tokens": int(len(new_tokens)),
                                        "commit": loaded.commit})
        except Exception as exc:  # per-example failure: recorded, the run goes on
            message = exc.one_line() if isinstance(exc, ContextLengthError) else f"{type(exc).__name__}: {exc}"
            return ModelResponse(content="", reasoning="", raw_text="", backend=self.name, model=request.model.model_id,
                                 latency_s=time.perf_counter() - started, error=message,
                                 prompt_hash=request.prompt_hash)

    def close(self) -> None:
        pass


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids: set[int] = set()
    gen_eos = getattr(loaded.model.generation_config, "eos_token_id", None)
    for value in (gen_eos, loaded.tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids
