"""Why two backends disagreed on an example: a cause per row, and (with a local model) the label margin.

Causes, first match wins:
- `error`           one side has no response (backend error)
- `refusal`         one side refused to classify, the other did not
- `parse`           one side's answer could not be parsed into a label
- `label_flip`      both gave a label; the binary labels differ
- `fine_grain_only` same binary label, different fine-grained label
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

CAUSES = ("error", "refusal", "parse", "label_flip", "fine_grain_only")
NEAR_TIE_NATS = 1.0  # |log p(own) - log p(other)| below this: the local model nearly chose the other label


@dataclass(frozen=True)
class Side:
    binary: int | None
    fine: str | None
    parse_ok: bool
    refusal: bool
    error: str | None


def outcome(side: Side) -> str:
    """What a backend said, as one comparable value: a label, or why there is none."""
    if side.error:
        return "error"
    if side.binary is not None:
        return str(side.binary)
    return "refusal" if side.refusal else "unparsed"


def fine_outcome(side: Side) -> str:
    base = outcome(side)
    return side.fine if base in ("0", "1") and side.fine is not None else base


def cause(a: Side, b: Side) -> str | None:
    """None when both backends said the same thing (same label, or the same kind of non-answer)."""
    if a.error or b.error:
        return "error"
    if outcome(a) == outcome(b) and fine_outcome(a) == fine_outcome(b):
        return None
    if a.refusal != b.refusal:
        return "refusal"
    if (a.binary is None) != (b.binary is None):
        return "parse"
    if a.binary is not None and a.binary != b.binary:
        return "label_flip"
    return "fine_grain_only"


@dataclass(frozen=True)
class Margin:
    nats: float  # log p(own label) - log p(other label) at the position the local model wrote its label
    own: str
    other: str

    @property
    def kind(self) -> str:
        return "near_tie" if abs(self.nats) < NEAR_TIE_NATS else "true_disagreement"


def label_margin(model: Any, tokenizer: Any, prompt: str, raw_text: str, own: str, other: str) -> Margin | None:
    """Score the other backend's label under the local model, at the point where the local model wrote its own.

    `prompt` is the exact rendered prompt and `raw_text` the local model's output. The label is located at its
    last occurrence in the output (the parser reads the last final message); both continuations are tokenized
    in context and compared at the first token where they differ. None when the label cannot be located.
    """
    import torch

    at = raw_text.rfind(own)
    if at < 0 or own == other:
        return None
    prefix = prompt + raw_text[:at]
    ids_own = tokenizer(prefix + own, add_special_tokens=False)["input_ids"]
    ids_other = tokenizer(prefix + other, add_special_tokens=False)["input_ids"]
    split = next((i for i, (x, y) in enumerate(zip(ids_own, ids_other)) if x != y), None)
    if split is None or split == 0:
        return None
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(torch.tensor([ids_own[:split]], device=device)).logits[0, -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return Margin(float(logprobs[ids_own[split]] - logprobs[ids_other[split]]), own, other)


def cause_counts(causes: Sequence[str | None]) -> dict[str, int]:
    counts = {c: 0 for c in CAUSES}
    for c in causes:
        if c is not None:
            counts[c] = counts.get(c, 0) + 1
    return counts
