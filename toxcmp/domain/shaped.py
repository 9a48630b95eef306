"""Random-weight models shaped like gpt-oss, built locally from a config (no download): the plumbing and speed of
the gpt-oss path — Harmony template, sliding-window layers, attention sinks, MoE — on a CPU-sized model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

HARMONY_SPECIALS = ["<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|constrain|>", "<|call|>",
                    "<|endoftext|>"]

# A condensed Harmony template: system (identity, reasoning effort, channels), developer (the policy), user,
# then the generation prompt. The real gpt-oss template renders the same structure.
HARMONY_TEMPLATE = (
    "<|start|>system<|message|>{{ model_identity | default('You are ChatGPT, a large language model trained by OpenAI.') }}\n"
    "Reasoning: {{ reasoning_effort | default('medium') }}\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' or m['role'] == 'developer' %}<|start|>developer<|message|># Instructions\n\n{{ m['content'] }}<|end|>"
    "{% elif m['role'] == 'user' %}<|start|>user<|message|>{{ m['content'] }}<|end|>"
    "{% elif m['role'] == 'assistant' %}<|start|>assistant<|channel|>final<|message|>{{ m['content'] }}<|end|>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant{% endif %}"
)

CORPUS = [
    "analysis final commentary The user asks for something. This is safe. This is toxic. 0 1",
    "You are ChatGPT, a large language model trained by OpenAI. Reasoning: low medium high",
    "Instructions Valid channels must be included for every message violation category none harassment",
] * 20


def build_random_gptoss(target: Path, hidden_size: int = 64, intermediate_size: int = 64, num_hidden_layers: int = 2,
                        num_attention_heads: int = 4, num_key_value_heads: int = 2, head_dim: int = 16,
                        num_local_experts: int = 4, num_experts_per_tok: int = 2, sliding_window: int = 32,
                        seed: int = 0, random_sinks: bool = False, vocab_size: int = 400) -> Path:
    """Write a random GptOssForCausalLM with a small byte-level BPE Harmony tokenizer to `target` (atomically)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GptOssConfig, GptOssForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=HARMONY_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|return|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=HARMONY_SPECIALS[:-1])
    fast.chat_template = HARMONY_TEMPLATE
    config = GptOssConfig(vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=intermediate_size,
                          num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                          num_key_value_heads=num_key_value_heads, head_dim=head_dim,
                          num_local_experts=num_local_experts, num_experts_per_tok=num_experts_per_tok,
                          sliding_window=sliding_window, max_position_embeddings=8192,
                          eos_token_id=fast.convert_tokens_to_ids("<|return|>"),
                          pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"))
    torch.manual_seed(seed)
    model = GptOssForCausalLM(config)
    if random_sinks:
        for layer in model.model.layers:
            layer.self_attn.sinks.data.normal_(5.0, 2.0)  # large enough to matter over ~1,000 positions
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    model.save_pretrained(tmp)
    fast.save_pretrained(tmp)
    try:
        os.rename(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    return target


def shaped_model_dir(name: str, config_file: str, cache_dir: Path | None = None) -> Path:
    """The built model for a `random_config` alias, built on first use under the models dir."""
    import tomllib

    from toxcmp.config import configs_dir, models_dir

    path = configs_dir() / "models" / config_file
    with path.open("rb") as fh:
        params: dict[str, Any] = tomllib.load(fh)
    target = models_dir(cache_dir) / f"{name}-{_digest(path)}"
    if not (target / "config.json").is_file():
        build_random_gptoss(target, random_sinks=True, **params)
    return target


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
