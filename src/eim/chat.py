"""Chatting with a trained checkpoint about an image (docs/design.md §12), the way people use a chatbot.

    from eim.chat import Chat
    chat = Chat.load("runs/llava")
    chat.ask("What is in the image?", image="cat.png")          # greedy answer
    chat.ask("Is it big?")                                        # follows up on the same image

A conversation is rendered into one prompt by the run's last stage's conversation template, exactly
as training renders a conversation (:mod:`eim.model.template`, :class:`eim.model.splice.TextEncoder`):
its earlier turns, then the question and the template's assistant prefix. The exported
``llava-hf`` folder's chat template renders the same prompt (:mod:`eim.export.llava_hf`), so both
give the same greedy answers. Decoding is the recipe's (greedy unless it says otherwise), cut at
its ``stop_text``.
"""

import os
from pathlib import Path
from typing import Any, Optional, Union

from transformers import PreTrainedTokenizerBase

from eim.api import load_for_inference
from eim.config import Recipe
from eim.data.sample import Sample
from eim.errors import DataError
from eim.model.multimodal import MultimodalLM
from eim.model.splice import TextEncoder
from eim.model.template import stop_text as template_stop
from eim.training.collate import Collator
from eim.training.tracking import image_positions


class Chat:
    """One conversation with ``model``: ``ask(question, image=None, streamer=None) -> answer``."""

    def __init__(self, model: MultimodalLM, tokenizer: PreTrainedTokenizerBase, image_processor: Any, recipe: Recipe,
                 max_new_tokens: Optional[int] = None, num_beams: Optional[int] = None) -> None:
        self.model, self.tok, self.proc, self.recipe = model, tokenizer, image_processor, recipe
        g = recipe.generation
        self.max_new_tokens, self.num_beams = max_new_tokens or g.max_new_tokens, num_beams or g.num_beams
        self.template = recipe.stage_template()
        # a conversation grows past what one training sample holds: prompts are cut only at the LLM's context
        context = getattr(model.lm.config, "max_position_embeddings", None) or 10 ** 6
        self.collate = Collator(TextEncoder.for_recipe(tokenizer, recipe, max_length=context,
                                                       image_positions=image_positions(model)), image_processor,
                                mode="prompt", image_aspect_ratio=recipe.data.image_aspect_ratio)
        self.image, self.turns = None, []

    @classmethod
    def load(cls, checkpoint: Union[str, os.PathLike], **kw: Any) -> "Chat":
        """A chat with the checkpoint :func:`eim.load_for_inference` loads (``kw``: decoding settings)."""
        return cls(*load_for_inference(checkpoint), **kw)

    def reset(self, image: Optional[Union[str, os.PathLike]] = None) -> None:
        """Start a new conversation (about ``image``, or none)."""
        self.image, self.turns = _checked(image), []

    def sample(self, question: str) -> Sample:
        """This conversation's turns and ``question`` as a sample (its prompt: the conversation so far)."""
        turns = self.turns + [(question.strip(), "")]
        return Sample(index=0, image=self.image, instruction=turns[0][0], response=turns[0][1],
                      turns=turns if len(turns) > 1 else None)

    def ask(self, question: str, image: Optional[Union[str, os.PathLike]] = None, streamer: Any = None) -> str:
        """The answer to ``question`` (about ``image`` when given: a new image starts a new
        conversation); ``streamer``: a transformers streamer that receives the tokens as they come."""
        if image is not None and _checked(image) != self.image:
            self.reset(image)
        if not question.strip():
            raise DataError("empty question", remedy="type a question")
        batch = self.collate([self.sample(question)])
        extra = {"streamer": streamer} if streamer is not None else {}
        answer = self.model.generate(batch, self.tok, num_beams=self.num_beams, max_new_tokens=self.max_new_tokens,
                                     stop_text=self.recipe.generation.stop_text, end_text=template_stop(self.template),
                                     **extra)[0]
        self.turns.append((question.strip(), answer))
        return answer


def _checked(image: Optional[Union[str, os.PathLike]]) -> Optional[str]:
    if image is None:
        return None
    if not Path(image).is_file():
        raise DataError("image file not found", file=image, remedy="check the path")
    return str(Path(image).resolve())


__all__ = ["Chat"]
