"""Benchmark conditions for the studies (docs/evidence.md §2): the shapes world at a size with the
power to tell, and what its encoders are pretrained on.

- ``indomain`` — the demo's regime: CLIP and the LLM are pretrained on the downstream training
  split itself (its captions, and the ScienceQA/LLaVA text), then fine-tuned on the same captions.
- ``transfer`` — the paper's regime: CLIP and the LLM are pretrained on a broad web corpus of the
  world (:mod:`eim_harness.shapes.web`: more and different scenes, alt-text style and vocabulary),
  then fine-tuned on a smaller downstream captioning set in another style.

Both use large validation and test splits (every choice is made on validation; test is read once
for the final table). Sizes were fixed before any EIM variant was scored on them.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

from eim_harness.shapes.writer import ensure_shapes
from eim_harness.encoders import cached_encoders
from eim.errors import EIMError


@dataclass(frozen=True)
class World:
    """One condition's data and what its encoders learn from."""

    name: str  # indomain | transfer
    train: int  # downstream training images (5 captions each)
    val: int  # validation images: hyper-parameters are chosen here
    test: int  # test images: the final table
    web: int = 0  # web-corpus images (transfer): what CLIP and the LLM are pretrained on
    size: int = 64  # image side in pixels
    pretrain: str = "downstream"  # downstream: the training split | web: the web corpus

    @property
    def key(self):
        return f"{self.name}-{self.train}-{self.val}-{self.test}-{self.web}-{self.size}"


WORLDS = {
    "tiny": {
        "indomain": World("indomain", train=2000, val=1000, test=3000),
        "transfer": World("transfer", train=1000, val=1000, test=3000, web=12000, pretrain="web"),
    },
    "smol": {
        "indomain": World("indomain", train=2000, val=1000, test=3000),
        "transfer": World("transfer", train=1000, val=1000, test=3000, web=12000, pretrain="web"),
    },
    "test": {
        "indomain": World("indomain", train=24, val=8, test=8, size=32),
        "transfer": World("transfer", train=16, val=8, test=8, web=40, size=32, pretrain="web"),
    },
}


def world(preset, name):
    if preset not in WORLDS:
        raise EIMError(f"unknown preset {preset!r} (choose from {', '.join(WORLDS)})")
    if name not in WORLDS[preset]:
        raise EIMError(f"unknown condition {name!r} (choose from {', '.join(WORLDS[preset])})")
    return WORLDS[preset][name]


def ensure_world(root, w, quiet=False):
    """The world's data under ``root/data/<key>``, generated once (seed 0); returns the folder."""
    data = Path(root) / "data" / w.key
    if ensure_shapes(data, w.train, w.val, w.test, size=w.size, web=w.web) and not quiet:
        print(f"generated the {w.name} world: {asdict(w)}", flush=True)
    return data


def world_encoders(root, data, w, encoder_preset, overrides=None, quiet=False):
    """Pretrained CLIP and LLM for the condition (:func:`eim_harness.encoders.cached_encoders`):
    on the downstream training data (``indomain``) or on the web corpus alone (``transfer``)."""
    source = data if w.pretrain == "downstream" else data / "web"
    return cached_encoders(source, Path(root) / "encoders" / w.key, preset=encoder_preset, quiet=quiet,
                           overrides=overrides)
