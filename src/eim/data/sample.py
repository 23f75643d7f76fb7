"""The one sample shape every dataset yields (docs/design.md §5).

Datasets yield :class:`Sample` objects holding the image *path* (not pixels): the collator
loads and preprocesses images with the vision tower's CLIP image processor, so datasets stay
cheap to index and validate.
"""

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class Sample:
    index: int  # dataset index: row `index` of every feature bank belongs to this sample
    image: Optional[str]  # absolute path of the image file, or None for text-only samples
    instruction: str  # prompt text placed after the image tokens ("" for captioning)
    response: str  # target text; the LM loss covers exactly these tokens
    image_id: Any = None  # cocoid / imgid, ScienceQA qid, MME image name, LLaVA id
    meta: dict = field(default_factory=dict)  # fields the evaluations need (answer, subject, ...)
    caption: Optional[str] = None  # the image's caption where the data gives one apart from the response
    # a conversation of several turns: [(question, answer), ...], the first being (instruction,
    # response); None for one turn. Every answer is a target (docs/design.md §5)
    turns: Optional[list[tuple[str, str]]] = None
    system: Optional[str] = None  # the conversation's own system message: replaces the template's system line

    @property
    def conversation(self) -> list[tuple[str, str]]:
        """Every (question, answer) turn: :attr:`turns`, or the one (instruction, response)."""
        return list(self.turns) if self.turns else [(self.instruction, self.response)]

    @property
    def ie_text(self) -> str:
        """The text whose CLIP feature is this sample's ``loss_IE`` key (docs/design.md §2): the
        caption where the data has one (ScienceQA's ``captions.json``), else the (first) response
        (which *is* the caption in captioning data)."""
        return self.caption if self.caption else self.response
