"""The local backend's own token log-probabilities, recorded while it generates (issue 24): the log-softmax of the
model's raw next-token logits at each step (fp32, before any sampling warper), the chosen token's log p and the
top K. One recorder serves every strategy: it hooks the model's forward, so `generate` (naive, batched) and the
prefix strategy's own decode loop are read the same way. The token chosen at step t is the input of step t + 1;
the last step's is resolved from the output, so only one step's distribution is held at a time."""

from __future__ import annotations

from typing import Any, Sequence

from toxcmp.backends.shared_prefix import prefill_group
from toxcmp.domain.parsing import HARMONY_FINAL
from toxcmp.domain.tokens import token_strings


# Alternatives recorded per step whatever K the wire shows: what teacher-forced scoring reads back
# (toxcmp.run.teacher_forcing.TOP_K) where another arm's answer follows this generation (toxcmp.backends.local_tails).
KEPT_TOP = 5


class LogprobRecorder:
    """`with LogprobRecorder(model, k) as rec: …generate…; rec.rows(new_tokens_per_row, tokenizer, harmony)`."""

    def __init__(self, model: Any, top_k: int):
        self.model, self.top_k = model, top_k
        self.recorded_top = max(top_k, KEPT_TOP)
        self.chosen: list[Any] = []  # per step: (batch,) log p of the token chosen
        self.tops: list[tuple[Any, Any]] = []  # per step: (values, indices), each (batch, k)
        self._last: Any = None
        self._pending: Any = None  # the first step's log p while its prefill groups arrive
        self._pending_rows = 0
        self._handle: Any = None

    def __enter__(self) -> "LogprobRecorder":
        self._handle = self.model.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()

    def _hook(self, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        import torch

        ids = kwargs.get("input_ids", args[0] if args else None)
        if self._last is not None and ids is not None:
            self.chosen.append(self._last.gather(-1, ids[:, -1:].to(self._last.device))[:, 0])
        logp = torch.log_softmax(output.logits[:, -1, :].float(), dim=-1)
        group = prefill_group()
        if group is not None:  # the prefix strategy prefills its rows in groups: the first step is their union
            rows, batch = group
            if self._pending is None:
                self._pending, self._pending_rows = logp.new_empty(batch, logp.shape[-1]), 0
            self._pending[torch.tensor(rows, device=logp.device)] = logp
            self._pending_rows += len(rows)
            if self._pending_rows < batch:
                return
            logp, self._pending = self._pending, None
        values, indices = torch.topk(logp, self.recorded_top, dim=-1)
        self.tops.append((values, indices))
        self._last = logp

    def _resolve(self, new_tokens: Sequence[Sequence[int]]) -> None:
        import torch

        if self._last is not None:  # the last step's token is in the output only
            step = len(self.chosen)
            last = torch.tensor([row[step] if len(row) > step else 0 for row in new_tokens], device=self._last.device)
            self.chosen.append(self._last.gather(-1, last[:, None])[:, 0])
        self._last = None

    def steps(self, new_tokens: Sequence[Sequence[int]]) -> list[tuple[list[float], list[list[int]]]]:
        """Per row, over its own steps: the chosen token's log p and the `recorded_top` most likely token ids."""
        import torch

        self._resolve(new_tokens)
        chosen = torch.stack(self.chosen, dim=1).tolist() if self.chosen else [[] for _ in new_tokens]
        ids = torch.stack([i for _, i in self.tops], dim=1).tolist() if self.tops else [[] for _ in new_tokens]
        return [(chosen[b][:len(row)], ids[b][:len(row)]) for b, row in enumerate(new_tokens)]

    def rows(self, new_tokens: Sequence[Sequence[int]], tokenizer: Any, harmony: bool | None) -> list[list[dict]]:
        """Each row's tokens in the wire's shape ({"part", "token", "logprob", "top"}), token strings cut from the
        cumulative decoding so that they spell the decoded text (a leading space belongs to its token)."""
        import torch

        self._resolve(new_tokens)
        chosen = torch.stack(self.chosen, dim=1).tolist() if self.chosen else [[] for _ in new_tokens]
        k = self.top_k
        tops = [(v[:, :k].tolist(), i[:, :k].tolist()) for v, i in self.tops] if k else []
        out = []
        for b, row in enumerate(new_tokens):
            strings = token_strings(tokenizer, row)
            parts = token_parts(strings, harmony)
            out.append([{"part": parts[j], "token": strings[j], "id": int(row[j]), "logprob": float(chosen[b][j]),
                         "top": ([[tokenizer.decode([t]), float(v)] for v, t in zip(tops[j][0][b], tops[j][1][b])]
                                 if tops else [])}
                        for j in range(len(row))])
        return out


def token_parts(strings: Sequence[str], harmony: bool | None) -> list[str]:
    """"reasoning" up to and including Harmony's final-channel header, "content" after it; a model without
    Harmony writes content throughout (its think tags, if any, are parsed from the text, not from tokens)."""
    if not harmony:
        return ["content"] * len(strings)
    text, parts = "", []
    for s in strings:
        parts.append("content" if HARMONY_FINAL in text else "reasoning")
        text += s
    return parts
