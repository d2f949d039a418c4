"""The Memento chat format, defined once (FORMAT.md section 6).

Memento models are trained on Qwen3 ChatML with the assistant content copied verbatim (no system
prompt unless one is given, no ``<think>`` prefill, no rewriting of ``</think>``):

- :data:`MEMENTO_CHAT_TEMPLATE`: that format as a Jinja chat template (usable as
  ``tokenizer.chat_template``); the ``chatml`` and ``tokenized`` exports produce exactly its
  rendering (:func:`render_chatml`);
- :data:`MEMENTO_PROMPT_TEMPLATE`: the same format up to the assistant's first token, as a plain
  ``{problem}`` template: the prompt :func:`mementos_fast.tokens.render_prompts` and the token
  counts render by default (equal to the Jinja template with ``add_generation_prompt=True``).
"""

from __future__ import annotations

__all__ = ["MEMENTO_CHAT_TEMPLATE", "MEMENTO_PROMPT_TEMPLATE", "render_chatml", "render_prompt"]

_USER_OPEN = "<|im_start|>user\n"
_TURN_CLOSE = "<|im_end|>\n"
_ASSISTANT_OPEN = "<|im_start|>assistant\n"
_IM_END = "<|im_end|>"

#: The chat template Memento models are trained with, as Jinja (usable as ``tokenizer.chat_template``).
MEMENTO_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: :data:`MEMENTO_CHAT_TEMPLATE` rendered for one user message with ``add_generation_prompt=True``,
#: with ``{problem}`` in place of the message (filled with pyarrow, no Python string per row).
MEMENTO_PROMPT_TEMPLATE = f"{_USER_OPEN}{{problem}}{_TURN_CLOSE}{_ASSISTANT_OPEN}"


def render_chatml(problem: str, response: str, system_prompt: str | None = None) -> str:
    """One row in the Memento chat format (the reference the ``chatml`` export must equal)."""
    head = f"<|im_start|>system\n{system_prompt}{_TURN_CLOSE}" if system_prompt is not None else ""
    return f"{head}{_USER_OPEN}{problem}{_TURN_CLOSE}{_ASSISTANT_OPEN}{response}{_TURN_CLOSE}"


def render_prompt(problem: str) -> str:
    """One problem's prompt in the Memento chat format, up to the assistant's first token."""
    return MEMENTO_PROMPT_TEMPLATE.format(problem=problem)
