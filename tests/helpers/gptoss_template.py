"""A Harmony chat template with the real gpt-oss template's clock, and tokenizers/models that carry it.

The condensed stand-in (`toxcmp.domain.shaped.HARMONY_TEMPLATE`) leaves out two lines of the real gpt-oss system
message. The public `chat_template.jinja` of openai/gpt-oss-20b writes them in its `build_system_message` macro as

    {{- "Knowledge cutoff: 2024-06\\n" }}
    {{- "Current date: " + strftime_now("%Y-%m-%d") + "\\n\\n" }}

— a direct call of transformers' `strftime_now` (the machine's clock, in its time zone), with no `date_string` it
would honour. `DATED_HARMONY_TEMPLATE` is that system message (identity, knowledge cutoff, current date, reasoning,
channels) in the real template's own Jinja, followed by the developer message (the policy), the user turns and the
generation prompt, as the real template renders them for toxcmp's two messages.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

DATED_HARMONY_TEMPLATE = r"""{%- macro build_system_message() -%}
    {%- if model_identity is not defined %}
        {%- set model_identity = "You are ChatGPT, a large language model trained by OpenAI." %}
    {%- endif %}
    {{- model_identity + "\n" }}
    {{- "Knowledge cutoff: 2024-06\n" }}
    {{- "Current date: " + strftime_now("%Y-%m-%d") + "\n\n" }}
    {%- if reasoning_effort is not defined %}
        {%- set reasoning_effort = "medium" %}
    {%- endif %}
    {{- "Reasoning: " + reasoning_effort + "\n\n" }}
    {{- "# Valid channels: analysis, commentary, final. Channel must be included for every message." }}
{%- endmacro -%}

{{- "<|start|>system<|message|>" }}
{{- build_system_message() }}
{{- "<|end|>" }}

{%- if messages[0].role == "developer" or messages[0].role == "system" %}
    {%- set developer_message = messages[0].content %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set developer_message = "" %}
    {%- set loop_messages = messages %}
{%- endif %}

{%- if developer_message %}
    {{- "<|start|>developer<|message|>" }}
    {{- "# Instructions\n\n" }}
    {{- developer_message }}
    {{- "<|end|>" }}
{%- endif %}

{%- for message in loop_messages -%}
    {%- if message.role == 'assistant' -%}
        {{- "<|start|>assistant<|channel|>final<|message|>" + message.content + "<|end|>" }}
    {%- elif message.role == 'user' -%}
        {{- "<|start|>user<|message|>" + message.content + "<|end|>" }}
    {%- endif -%}
{%- endfor -%}

{%- if add_generation_prompt -%}
<|start|>assistant
{%- endif -%}"""


def expected_prompt(messages: list[dict[str, str]], date: str, **template_kwargs: str) -> str:
    """What the template renders with its clock reading `date` (YYYY-MM-DD): plain jinja2, configured as
    transformers configures its sandbox (trim_blocks, lstrip_blocks), with a fixed `strftime_now` — no toxcmp and
    no `apply_chat_template` involved."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["strftime_now"] = lambda fmt: datetime.strptime(date, "%Y-%m-%d").strftime(fmt)
    return env.from_string(DATED_HARMONY_TEMPLATE).render(messages=messages, add_generation_prompt=True,
                                                          **template_kwargs)


def dated_tokenizer(template: str = DATED_HARMONY_TEMPLATE):
    """A tiny byte-level Harmony tokenizer, built offline, whose chat template is `template`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from toxcmp.domain.shaped import CORPUS, HARMONY_SPECIALS

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=HARMONY_SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|return|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=HARMONY_SPECIALS[:-1])
    fast.chat_template = template
    return fast


def build_dated_gptoss(target: Path) -> Path:
    """The tiny random gpt-oss model (`tests.helpers.tiny_gptoss`), its chat template replaced by the dated one."""
    from transformers import AutoTokenizer

    from tests.helpers.tiny_gptoss import build_tiny_gptoss

    model_dir = build_tiny_gptoss(target)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = DATED_HARMONY_TEMPLATE
    tokenizer.save_pretrained(model_dir)
    return model_dir
