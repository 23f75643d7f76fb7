"""One loader class per published data format (docs/design.md §5)."""

from eim.data.formats.alpaca import Alpaca
from eim.data.formats.coco import CocoKarpathy
from eim.data.formats.llava import LLaVAInstruct
from eim.data.formats.messages import Messages
from eim.data.formats.mme import MME
from eim.data.formats.scienceqa import ScienceQA

# --data-format name -> loader class
FORMATS = {
    "coco": CocoKarpathy,
    "scienceqa": ScienceQA,
    "llava": LLaVAInstruct,
    "messages": Messages,
    "alpaca": Alpaca,
    "mme": MME,
}

__all__ = ["FORMATS", "Alpaca", "CocoKarpathy", "LLaVAInstruct", "MME", "Messages", "ScienceQA"]
