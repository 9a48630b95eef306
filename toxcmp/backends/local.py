"""`local` backend: transformers `apply_chat_template` + `generate`, greedy by default."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

from toxcmp.backends import OnResponse, TokenScores, local_prefixes, local_tails
from toxcmp.backends.local_batches import (
    ONE_LOOP_STEP_COST,
    PREFILL_CALL_TOKENS,
    auto_batch_size,
    length_buckets,
    parse_batch_size,
)
from toxcmp.backends.local_logprobs import LogprobRecorder
from toxcmp.backends.local_prefixes import PrefixCache
from toxcmp.backends.local_model import (
    LoadedModel,
    LocalModelCache,
    render_prompt,
    resolve_device,
)
from toxcmp.backends.options import BackendOptions, check_logprobs, choice, option
from toxcmp.domain.models import (
    ModelSpec,
    resolved_revision,
)
from toxcmp.domain.parsing import read_answer
from toxcmp.domain.prompting import ChatRequest
from toxcmp.domain.responses import ModelResponse
from toxcmp.domain.tokens import eos_ids
from toxcmp.errors import ContextLengthError

log = logging.getLogger(__name__)


STRATEGIES = ("prefix", "batched", "naive")


DTYPES = ("auto", "float32", "bfloat16", "float16")


LINEAR_KERNELS = ("onednn", "torch")


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class LocalOptions(BackendOptions):
    # The whole configuration is the identity: strategies are meant to be token-identical, and comparing them is
    # how that is checked, so one strategy never answers from another's cache entries (nor one batch size).
    device: str = option("auto", changes_answer=True, help="auto, cpu, mps, cuda or cuda:N")
    dtype: str = option("auto", changes_answer=True, help=", ".join(DTYPES))
    batch_size: str = option("auto", changes_answer=True, help="auto (memory-aware) or a number")
    strategy: str = option("prefix", changes_answer=True,
                           help="prefix (batched + shared policy-prefix KV cache), batched, or naive (the reference)")
    logprobs: int | None = option(None, changes_answer=True,
                                  help="record each generated token's log p (fp32, raw logits) and its top K "
                                       "alternatives → tokens.parquet; None: not recorded")
    linear: str = option("onednn", changes_answer=True,
                         help="fp32 linear layers of the prefix strategy on a CPU: onednn (weights packed once, "
                              "toxcmp.backends.cpu_linear) or torch (PyTorch's own, MKL); same dtype, rounding "
                              "differs")

    def check(self, suffix: str = "") -> None:
        super().check(suffix)
        choice(self.dtype, DTYPES, "dtype", suffix, flag="--dtype")
        if not _DEVICE.match(self.device or ""):
            from toxcmp.errors import UsageError

            raise UsageError(f"unknown device {self.device!r}{suffix}", "use auto, cpu, mps, cuda or cuda:N")
        choice(self.strategy, STRATEGIES, "strategy", suffix, flag="--strategy")
        choice(self.linear, LINEAR_KERNELS, "linear", suffix)
        parse_batch_size(self.batch_size, suffix)
        check_logprobs(self.logprobs, suffix)

    def computes_here(self) -> bool:
        return True


class LocalBackend:
    name = "local"
    Options = LocalOptions
    _prefix_warned: set[str] = set()  # say once per process and model that prefix reuse is off

    def __init__(self, config: Any = None):
        """`config`: `LocalOptions`, or run-wide settings (a `BackendConfig`) to take them from."""
        self.config = self.options = config if isinstance(config, LocalOptions) else LocalOptions.build(config)
        self.device = resolve_device(self.config.device)
        self.batch_size = parse_batch_size(config.batch_size)
        self._prefixes: dict[tuple, PrefixCache | None] = {}
        self._resolved: dict[ModelSpec, str] = {}
        self.stats = {"batches": 0, "prefill_groups": 0, "splits": 0, "prefix_hits": 0, "prefix_misses": 0,
                      "prefix_tokens_reused": 0, "prefix_tokens_computed": 0, "prefix_tokens_found": 0,
                      "tails_reused": 0, "tokens_reused": 0}

    @property
    def endpoint(self) -> str:
        return f"transformers:{self.device}:{self.config.dtype}:{self.config.strategy}:bs={self.config.batch_size}"

    @property
    def threads(self) -> int:
        """torch intra-op threads this backend computes with: --threads, the run's plan, or every core but one."""
        from toxcmp.backends.threads import alone_threads

        return self.config.threads or alone_threads()

    def _apply_threads(self) -> None:
        import torch

        if torch.get_num_threads() != self.threads:  # process-wide; set before every load and generate
            torch.set_num_threads(self.threads)

    def load(self, spec: ModelSpec) -> LoadedModel:
        self._apply_threads()
        return LocalModelCache.get(spec, self.device, self.config.dtype, self.config.cache_dir,
                                   self.resolved_revision(spec))

    def resolved_revision(self, spec: ModelSpec) -> str:
        """The weights this backend answers `spec` with: what it loaded when it has, else what it would load
        (bundled: the GGUF's sha256; Hub: the Hub's commit online, the local HF cache's offline). No load."""
        loaded = LocalModelCache.peek(spec, self.device, self.config.dtype)
        if loaded is not None and loaded.commit:
            return loaded.commit
        if spec not in self._resolved:
            self._resolved[spec] = resolved_revision(spec, local_cache=True)
        return self._resolved[spec]

    def render(self, request: ChatRequest) -> str:
        return render_prompt(self.load(request.model).tokenizer, request)

    def prompt_for(self, loaded: LoadedModel, request: ChatRequest) -> str:
        return render_prompt(loaded.tokenizer, request)

    def continuation_logits(self, request: ChatRequest, ids: list[int]) -> Any:
        """The model's logits predicting each of `ids` after the exact prompt of `request` (len(ids) × vocab, in
        the model's dtype); see `continuation_logits_many`."""
        return self.continuation_logits_many([(request, ids)])[0]

    def continuation_logits_many(self, items: Sequence[tuple[ChatRequest, list[int]]]) -> list[Any]:
        """`continuation_logits` of each (request, ids): over the prompt's last token and `ids` only, several rows a
        pass, where a run recording log p kept the prompt's KV; else over the prompt's tail and `ids` where
        the prefix strategy holds the shared policy prefix's KV cache, else the whole prompt (local_forcing)."""
        from toxcmp.backends import local_forcing

        prepared = self._forcing_items(items)
        with self._kernels(prepared):
            return local_forcing.logits(prepared, self.stats, self._kernel_name(prepared))

    def continuation_scores_many(self, items: Sequence[tuple[ChatRequest, list[int]]], top_k: int,
                                 reuse: bool = True) -> list[TokenScores]:
        """Each (request, ids)'s log p and top ids, as `continuation_logits_many` computes them, but where this
        process's generation of the prompt (a run recording log p) starts with the same tokens, their scores are
        read from it, not computed again; `reuse=False` computes every one (local_forcing)."""
        from toxcmp.backends import local_forcing

        prepared = self._forcing_items(items)
        with self._kernels(prepared):
            return local_forcing.scores(prepared, top_k, self.stats, reuse, self._kernel_name(prepared))

    def _kernels(self, prepared: Sequence[tuple]) -> Any:
        """The linear kernels the prefix strategy computes with (cpu_linear), for the models of `prepared`."""
        from toxcmp.backends import cpu_linear

        stack = contextlib.ExitStack()
        if self._kernel_name(prepared) == "onednn":
            for model in {id(loaded.model): loaded.model for loaded, *_ in prepared}.values():
                stack.enter_context(cpu_linear.packed(model))
        return stack

    def _kernel_name(self, prepared: Sequence[tuple]) -> str:
        """Which linear kernels `_kernels` computes with: part of the in-process keys of what it leaves behind
        (local_prefixes, local_tails), so a `linear=torch` arm never reads KV that oneDNN computed."""
        from toxcmp.backends import cpu_linear

        packs = self.config.strategy == "prefix" and self.config.linear == "onednn"
        return "onednn" if packs and all(cpu_linear.available(loaded.model) for loaded, *_ in prepared) else "torch"

    def _forcing_items(self, items: Sequence[tuple[ChatRequest, list[int]]]) -> list[tuple]:
        self._apply_threads()
        prepared = []
        for request, ids in items:
            loaded = self.load(request.model)
            prefix = self._prefix(loaded, request) if self.config.strategy == "prefix" else None
            prepared.append((loaded, prefix, request, list(ids)))
        return prepared

    def generate(self, requests: Sequence[ChatRequest], on_response: OnResponse | None = None) -> list[ModelResponse]:
        self._apply_threads()
        out: list[ModelResponse | None] = [None] * len(requests)

        def emit(index: int, response: ModelResponse) -> None:
            out[index] = response
            if on_response:
                on_response(index, response)

        greedy = all(r.generation.greedy for r in requests)
        if self.config.strategy == "naive" or not greedy or len(requests) == 1:
            for index, request in enumerate(requests):  # the reference: one generate per example, full prompt
                emit(index, self._generate_one(request))
        else:
            groups: dict[tuple, list[int]] = {}
            for index, request in enumerate(requests):
                groups.setdefault((request.model, request.generation), []).append(index)
            for indices in groups.values():
                self._generate_group(requests, indices, emit)
        return [r for r in out if r is not None]

    # -- naive -----------------------------------------------------------------------------------------------
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
            _check_context(n_prompt, gen.max_new_tokens, loaded.context_length)
            kwargs = _generate_kwargs(tok, gen)
            if not gen.greedy and gen.seed is not None:
                torch.manual_seed(gen.seed)
            with torch.inference_mode(), self._recorder(loaded) as recorder:
                output = loaded.model.generate(**enc, **kwargs)
            new_tokens = [int(t) for t in output[0, n_prompt:]]
            return self._response(loaded, request, new_tokens, n_prompt, time.perf_counter() - started,
                                  {"strategy": "naive", "batch_size": 1}, self._tokens(recorder, [new_tokens], loaded, request))
        except Exception as exc:  # per-example failure: recorded, the run goes on
            return self._error(request, exc, time.perf_counter() - started)

    # -- batched ---------------------------------------------------------------------------------------------
    def _generate_group(self, requests: Sequence[ChatRequest], indices: list[int], emit) -> None:
        from toxcmp.backends import shared_prefix

        request0 = requests[indices[0]]
        loaded = self.load(request0.model)
        tok = loaded.tokenizer
        gen = request0.generation
        encoded: list[tuple[int, list[int]]] = []
        for i in indices:
            try:
                ids = tok(render_prompt(tok, requests[i]), add_special_tokens=False)["input_ids"]
                _check_context(len(ids), gen.max_new_tokens, loaded.context_length)
                encoded.append((i, ids))
            except Exception as exc:  # noqa: BLE001 - this example only
                emit(i, self._error(requests[i], exc, 0.0))
        prefix = self._prefix(loaded, request0) if self.config.strategy == "prefix" else None
        with_prefix, without = [], []
        for i, ids in encoded:
            shares = prefix is not None and prefix.starts(ids)
            (with_prefix if shares else without).append((i, ids))
        if prefix is not None:
            self.stats["prefix_tokens_reused"] += len(prefix.ids) * len(with_prefix)
            self.stats["prefix_hits"] += len(with_prefix)
            self.stats["prefix_misses"] += len(without)
        longest = max((len(ids) for _, ids in encoded), default=0)
        size = self.batch_size or auto_batch_size(loaded, longest + gen.max_new_tokens, self.device)
        for items, pre in ((with_prefix, prefix), (without, None)):
            # a batch's decode step costs about as much as prefilling ~48 tokens (SmolLM2, 2-core CPU, measured);
            # the shared-prefix decode pads each row only within its prefill group, so it takes the fewest batches
            one_loop = pre is not None and shared_prefix.supported(loaded.model)
            step_cost = ONE_LOOP_STEP_COST if one_loop else 48 * gen.max_new_tokens
            for batch in length_buckets(items, size, len(pre.ids) if pre else 0, step_cost):
                self._run_batch(loaded, requests, batch, pre, emit)

    def _run_batch(self, loaded: LoadedModel, requests, batch, prefix: PrefixCache | None, emit) -> None:
        """One padded generate; if it raises (OOM included) split the batch and retry the halves."""
        started = time.perf_counter()
        failure: str | None = None
        try:
            with self._recorder(loaded) as recorder:
                outputs = self._batch_generate(loaded, requests, batch, prefix, recorder)
            tokens = self._tokens(recorder, outputs, loaded, requests[batch[0][0]])
        except Exception as exc:  # noqa: BLE001 - OOM (a RuntimeError) above all, but never lose the batch
            # Keep only what the error said: the exception's traceback holds the failed batch's frames and with
            # them its activations, which would stay allocated through the halves (each smaller retry then runs
            # out of memory too). Retry outside this block, once the traceback is gone.
            failure, failure_name = _error_message(exc), type(exc).__name__
        if failure is not None:
            if self.device.startswith("cuda"):
                import gc

                import torch

                gc.collect()
                torch.cuda.empty_cache()  # release the failed batch's activations before the halves run
            if len(batch) == 1:
                i = batch[0][0]
                emit(i, self._error(requests[i], failure, time.perf_counter() - started))
                return
            self.stats["splits"] += 1
            log.warning("batch of %d failed (%s); retrying as two halves", len(batch), failure_name)
            half = len(batch) // 2
            self._run_batch(loaded, requests, batch[:half], prefix, emit)
            self._run_batch(loaded, requests, batch[half:], prefix, emit)
            return
        elapsed = time.perf_counter() - started
        self.stats["batches"] += 1
        strategy = "prefix" if prefix is not None else "batched"
        for k, ((i, ids), new_tokens) in enumerate(zip(batch, outputs)):
            emit(i, self._response(loaded, requests[i], new_tokens, len(ids), elapsed / len(batch),
                                   {"strategy": strategy, "batch_size": len(batch), "batch_latency_s": round(elapsed, 4)},
                                   None if tokens is None else [tokens[k]]))

    def _batch_generate(self, loaded: LoadedModel, requests, batch, prefix: PrefixCache | None,
                        recorder: Any = None) -> list[list[int]]:
        import torch

        from toxcmp.backends import shared_prefix

        tok = loaded.tokenizer
        gen = requests[batch[0][0]].generation
        pad = _pad_id(tok)
        eos = _eos_ids(loaded)
        n_prefix = len(prefix.ids) if prefix else 0
        tails = [ids[n_prefix:] for _, ids in batch]
        if prefix is not None and shared_prefix.supported(loaded.model):
            groups = length_buckets(list(enumerate(tails)), len(tails), 0, PREFILL_CALL_TOKENS)
            kv_after_prefix: dict[int, list] = {}
            # the runs that record log p are the ones scored afterwards: keep what they computed for it
            keeps = isinstance(recorder, LogprobRecorder) and not shared_prefix.has_sinks(loaded.model)
            with self._kernels([(loaded,)]):
                out = shared_prefix.greedy_decode(loaded.model, shared_prefix.prefix_kv(prefix.cache), n_prefix,
                                                  tails, pad, eos, gen.max_new_tokens,
                                                  [[k for k, _ in g] for g in groups],
                                                  on_tail=kv_after_prefix.__setitem__ if keeps else None)
            if keeps:
                for k, ((_, ids), new, steps) in enumerate(zip(batch, out, recorder.steps(out))):
                    local_tails.keep(loaded.model, ids, n_prefix, kv_after_prefix[k], new, steps,
                                     self._kernel_name([(loaded,)]))
            self.stats["prefill_groups"] += len(groups)
            return out
        width = max(len(t) for t in tails)
        # Left padding after the shared prefix: the prefix KV stays valid, positions come from the attention mask.
        head = prefix.ids if prefix else []
        input_ids = [head + [pad] * (width - len(t)) + t for t in tails]
        mask = [[1] * n_prefix + [0] * (width - len(t)) + [1] * len(t) for t in tails]
        kwargs = _generate_kwargs(tok, gen)
        if prefix is not None:
            kwargs[shared_prefix.cache_kwarg(loaded.model)] = prefix.expanded(len(batch))
        with torch.inference_mode():
            output = loaded.model.generate(input_ids=torch.tensor(input_ids, device=loaded.device),
                                           attention_mask=torch.tensor(mask, device=loaded.device), **kwargs)
        results = []
        for row in output[:, n_prefix + width:].tolist():
            cut = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))  # after EOS only padding follows
            results.append(row[:cut])
        return results

    def _prefix(self, loaded: LoadedModel, request: ChatRequest) -> PrefixCache | None:
        """Looked up once per (model, system message, template options, render date) per instance, computed once
        per process and model (local_prefixes: another instance's is found); None when the model's cache can't be
        reused."""
        import torch

        from toxcmp.backends import shared_prefix

        key = (request.model, request.messages[:-1], tuple(sorted(request.template_options().items())),
               request.render_date, self.device, self.config.dtype)
        if key in self._prefixes:
            return self._prefixes[key]
        tok = loaded.tokenizer
        probes = []
        for filler in ("a", "z"):  # two different user texts: their common token prefix is the shared part
            probe = replace(request, messages=request.messages[:-1] + (("user", filler),), example_id=None)
            probes.append(tok(render_prompt(tok, probe), add_special_tokens=False)["input_ids"])
        common = 0
        while common < min(map(len, probes)) and probes[0][common] == probes[1][common]:
            common += 1
        ids = probes[0][: max(0, common - 1)]  # keep a token back: a text's first token can merge with the boundary
        prefix = None
        if len(ids) >= 8:
            try:
                reason = shared_prefix.prefix_reusable(loaded.model)
                if reason:
                    raise TypeError(reason)
                kernels = self._kernel_name([(loaded,)])
                prefix = local_prefixes.find(loaded.model, ids, kernels)  # another instance of this model computed it
                if prefix is not None:
                    self.stats["prefix_tokens_found"] += len(ids)
                else:
                    keep = {"logits_to_keep": 1} if shared_prefix.keeps_logits(loaded.model) else {}
                    with torch.inference_mode(), self._kernels([(loaded,)]):  # only its KV is kept
                        out = shared_prefix.prefill(loaded.model, torch.tensor([ids], device=loaded.device), **keep)
                    cache = shared_prefix.output_cache(out)
                    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
                        raise TypeError(f"cache type {type(cache).__name__} cannot be expanded per batch")
                    prefix = PrefixCache(ids, cache)
                    local_prefixes.keep(loaded.model, prefix, kernels)
                    self.stats["prefix_tokens_computed"] += len(ids)
            except Exception as exc:  # noqa: BLE001 - fall back to plain batching
                model_key = request.model.model_id
                if model_key not in self._prefix_warned:
                    self._prefix_warned.add(model_key)
                    log.warning("prefix KV reuse is off for %s (%s); batching without it", model_key, exc)
        self._prefixes[key] = prefix
        return prefix

    # -- shared ----------------------------------------------------------------------------------------------
    def _recorder(self, loaded: LoadedModel) -> Any:
        import contextlib

        if self.config.logprobs is None:
            return contextlib.nullcontext()
        return LogprobRecorder(loaded.model, self.config.logprobs)

    @staticmethod
    def _tokens(recorder: Any, outputs: list[list[int]], loaded: LoadedModel,
                request: ChatRequest) -> list[list[dict]] | None:
        if not isinstance(recorder, LogprobRecorder):
            return None
        return recorder.rows(outputs, loaded.tokenizer, request.model.harmony)

    def _response(self, loaded: LoadedModel, request: ChatRequest, new_tokens: list[int], n_prompt: int,
                  latency: float, extra: dict[str, Any], tokens: list[list[dict]] | None = None) -> ModelResponse:
        tok = loaded.tokenizer
        raw = tok.decode(new_tokens, skip_special_tokens=False)
        finish = "stop" if new_tokens and new_tokens[-1] in _eos_ids(loaded) else "length"
        parts = read_answer(raw, harmony=request.model.harmony)
        return ModelResponse(content=parts.content, reasoning=parts.reasoning, raw_text=raw, backend=self.name,
                             model=request.model.model_id, latency_s=latency, served_by=self.endpoint,
                             finish_reason=finish, prompt_hash=request.prompt_hash,
                             extra={"prompt_tokens": n_prompt, "completion_tokens": len(new_tokens),
                                    "commit": loaded.commit, "reasoning_source": parts.source, **extra,
                                    **({} if tokens is None else {"logprobs_asked": self.config.logprobs,
                                                                  "token_logprobs": tokens[0]})})

    def _error(self, request: ChatRequest, exc: Exception | str, latency: float) -> ModelResponse:
        message = exc if isinstance(exc, str) else _error_message(exc)
        return ModelResponse(content="", reasoning="", raw_text="", backend=self.name, model=request.model.model_id,
                             latency_s=latency, error=message, prompt_hash=request.prompt_hash)

    def close(self) -> None:
        self._prefixes.clear()


def _check_context(n_prompt: int, max_new_tokens: int, context_length: int) -> None:
    if n_prompt + max_new_tokens > context_length:
        raise ContextLengthError(
            f"prompt is {n_prompt} tokens; with max_new_tokens={max_new_tokens} it exceeds the model's "
            f"{context_length}-token context", "shorten the text or lower --max-new-tokens")


def _pad_id(tok: Any) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def _generate_kwargs(tok: Any, gen) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "pad_token_id": _pad_id(tok)}
    if gen.greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=gen.temperature, top_p=gen.top_p)
    return kwargs


def _eos_ids(loaded: LoadedModel) -> set[int]:
    return eos_ids(loaded.model, loaded.tokenizer)


def _error_message(exc: Exception) -> str:
    return exc.one_line() if isinstance(exc, ContextLengthError) else f"{type(exc).__name__}: {exc}"
