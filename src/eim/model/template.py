"""Conversation templates: how a conversation becomes the LLM's text, and which of it is a target
(docs/design.md §5).

A template renders ``[(question, answer), ...]`` (the last answer None for a generation prompt),
an optional system message and an optional image into a :class:`Rendered`: the text with
``<image>`` where the image goes (at most once) and the character spans that are targets. The
LLaVA-1.5 layouts are LLaVA's ``conversation.py``, written out:

- ``plain`` (LLaVA's stage 1): ``<image>`` then the answer and ``\\n``; the question is dropped. One
  turn only.
- ``vicuna_v1`` (LLaVA-1.5's stage 2): ``SYSTEM USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2
  ASSISTANT: A2</s>``; each answer and the ``</s>`` after it are targets; an empty question is
  ``USER:`` alone, as LLaVA writes an empty message. Questions and answers are used as the data
  gives them (LLaVA's whitespace: :mod:`eim.data.formats.conversation`).
- ``llama_2``: ``[INST] <<SYS>>\\nSYSTEM\\n<</SYS>>\\n\\n<image>\\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST] A2 </s>``.
- ``chatml``: ``<|im_start|>system\\nSYSTEM<|im_end|>\\n<|im_start|>user\\n<image>\\nQ1<|im_end|>\\n
  <|im_start|>assistant\\nA1<|im_end|>\\n``; each answer and its ``<|im_end|>`` are targets.
- ``tokenizer``: the LLM tokenizer's own ``chat_template``; its assistant spans are the template's
  ``{% generation %}`` blocks (a template without them is refused).

``</s>`` and ``<s>`` stand for the tokenizer's own EOS and BOS. ``raw`` (the bare layout of
ClipCap, LaVIN and LLaMA-Adapter: ``[lead][image][instruction][response][EOS]``) has no text
rendering: :class:`eim.model.splice.TextEncoder` builds it from token ids directly.
"""

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from eim.errors import ConfigError, DataError

IMAGE = "<image>"
TEMPLATES = ("raw", "plain", "vicuna_v1", "llama_2", "chatml", "tokenizer")
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAMA_2_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual "
                  "content that the user provides, and assist the user with a variety of tasks using natural language.")
CHATML_SYSTEM = "Answer the questions."  # LLaVA-NeXT's chatml_direct
GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class Rendered:
    """A rendered conversation: ``text`` (``<image>`` where the image goes) and the character spans
    of ``text`` that are targets (``[(start, end)]``)."""

    text: str = ""
    targets: list[tuple[int, int]] = field(default_factory=list)

    def add(self, text: str, target: bool = False) -> None:
        if target and text:
            self.targets.append((len(self.text), len(self.text) + len(text)))
        self.text += text


def with_image(question: str, image: bool) -> str:
    """The first user turn as LLaVA-1.5 writes it: ``<image>\\n`` then the question (``<image>``
    alone when there is none)."""
    return (IMAGE + "\n" + question.strip()).strip() if image else question


def stop_text(name: str) -> Optional[str]:
    """Text that ends an answer where it is not the tokenizer's EOS (cut from generated answers)."""
    return {"plain": "\n", "chatml": "<|im_end|>"}.get(name)


def render(name: str, turns: list[tuple[str, Optional[str]]], tokenizer: Any, system: Optional[str] = None,
           image: bool = False) -> Rendered:
    """``turns`` rendered by template ``name``; a last answer of None ends the text with the
    assistant's prefix (the generation prompt). ``system`` replaces the template's system line."""
    if name not in TEMPLATES or name == "raw":
        raise ConfigError(f"template {name!r} has no text rendering (allowed: {', '.join(TEMPLATES[1:])})")
    bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    out = Rendered()
    if name == "tokenizer":
        return _tokenizer(turns, tokenizer, system, image)
    if name == "plain":
        if len(turns) > 1:
            raise DataError(f"the plain template renders one (image, caption) pair; this conversation has "
                            f"{len(turns)} turns", remedy="train it with vicuna_v1, llama_2, chatml or tokenizer")
        out.add(IMAGE if image else "")
        if turns[0][1] is not None:
            out.add(turns[0][1] + "\n", target=True)
        return out
    if name == "vicuna_v1":
        out.add((VICUNA_SYSTEM if system is None else system) + " ")
    elif name == "chatml":
        sys_line = CHATML_SYSTEM if system is None else system
        if sys_line:
            out.add(f"<|im_start|>system\n{sys_line}<|im_end|>\n")
    for i, (q, a) in enumerate(turns):
        q = with_image(q, image and i == 0)
        if name == "vicuna_v1":
            out.add(f"USER: {q} ASSISTANT:" if q else "USER:ASSISTANT:")  # LLaVA: an empty message is "ROLE:"
            if a is not None:  # the space too: LLaVA's targets are every token after "ASSISTANT:"
                out.add(f" {a}{eos}", target=True)
        elif name == "llama_2":
            if i == 0 and (LLAMA_2_SYSTEM if system is None else system):
                q = f"<<SYS>>\n{LLAMA_2_SYSTEM if system is None else system}\n<</SYS>>\n\n{q}"
            out.add(("" if i == 0 else bos) + f"[INST] {q} [/INST]")
            if a is not None:
                out.add(f" {a} {eos}", target=True)
        else:  # chatml
            out.add(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")
            if a is not None:
                out.add(a + "<|im_end|>", target=True)
                out.add("\n")
    return out


def _tokenizer(turns, tokenizer, system, image):
    """The tokenizer's own chat template, its ``{% generation %}`` blocks the targets."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or not template:
        raise ConfigError("template 'tokenizer' needs the LLM tokenizer's chat_template, and this tokenizer has none; "
                          "choose vicuna_v1, llama_2, chatml or plain")
    if not GENERATION_BLOCK.search(template):
        raise ConfigError("template 'tokenizer': the LLM tokenizer's chat_template has no {% generation %} block, so "
                          "which tokens are the assistant's cannot be told; add {% generation %} ... "
                          "{% endgeneration %} around the assistant's content, or choose vicuna_v1, llama_2 or chatml")
    from transformers.utils.chat_template_utils import render_jinja_template  # transformers' own rendering

    messages = [{"role": "system", "content": system}] if system else []
    for i, (q, a) in enumerate(turns):
        messages.append({"role": "user", "content": with_image(q, image and i == 0)})
        if a is not None:
            messages.append({"role": "assistant", "content": a})
    generation = turns[-1][1] is None
    texts, spans = render_jinja_template([messages], chat_template=template, return_assistant_tokens_mask=True,
                                         add_generation_prompt=generation, **tokenizer.special_tokens_map)
    return Rendered(texts[0], [(int(s), int(e)) for s, e in spans[0]])


def targets_of(offsets: list[tuple[int, int]], spans: list[tuple[int, int]], shift: int = 0) -> list[bool]:
    """Whether each token (its character ``offsets`` in a chunk that starts at ``shift`` of the
    text) overlaps a target span: a token that joins a separator to the answer's first characters
    (``▁A``, ``ĠA``) is a target, as LLaVA's masking makes it."""
    out = []
    for s, e in offsets:
        s, e = s + shift, e + shift
        out.append(e > s and any(s < b and e > a for a, b in spans))
    return out
