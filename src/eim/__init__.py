"""EIM: improving multi-modal LLMs through the training process alone.

One import for the common path (docs/design.md)::

    import eim
    recipe = eim.load_recipe("clipcap_eim", {"vision.name_or_path": "/models/clip-vit-base-patch32"})
    eim.train(recipe, eim.load_dataset("data/coco", split="train"), "runs/eim")
    model, tokenizer, image_processor, recipe = eim.load_for_inference("runs/eim")
    eim.Chat.load("runs/eim").ask("What is in the image?", image="cat.png")

Everything here is importable without the CLI (``eim.cli`` only parses and calls). The method and
every decision where the paper (Bai, Su, Bai, PLOS ONE 2025) is silent are in ``docs/design.md``;
section numbers in docstrings refer to it.
"""

import logging as _logging
import os as _os
from importlib import import_module as _import_module

# Idle OpenMP threads sleep instead of spinning: on a small or shared CPU machine spinning threads
# make small-model steps many times slower (benchmarks/RESULTS.md). Effective only when eim is
# imported before torch (the CLI does); an explicit setting in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# DeepSpeed logs "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to
# detect it." (to stdout) in every process that imports it and finds no accelerator: each rank of a
# DeepSpeed run on CPU processes (docs/design.md §9). Dropped where the machine has no GPU driver at
# all; where one is installed but torch found no device the notice stays (a real problem there).
# Nothing else DeepSpeed logs is touched, and a machine DeepSpeed finds an accelerator on never logs it.
_GPU_DRIVERS = ("/proc/driver/nvidia/gpus", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL


def _no_cpu_fallback_notice(record):
    return not (record.funcName == "get_accelerator" and str(record.msg).startswith("Setting accelerator to CPU")
                and not any(_os.path.exists(p) for p in _GPU_DRIVERS))


_logging.getLogger("DeepSpeed").addFilter(_no_cpu_fallback_notice)

__version__ = "0.1.0"

from eim.errors import CheckpointError, ConfigError, DataError, EIMError  # noqa: E402

# name -> the module that defines it; loaded on first use, so `import eim` does not import torch
_LAZY = {
    "load_recipe": "eim.recipe", "Recipe": "eim.config",
    "load_dataset": "eim.data", "Dataset": "eim.data", "Sample": "eim.data",
    "train": "eim.api", "load_for_inference": "eim.api", "Inference": "eim.api", "param_report": "eim.api",
    "Chat": "eim.chat",
    "build_model": "eim.model.multimodal", "MultimodalLM": "eim.model.multimodal",
    "bank_infonce": "eim.losses.infonce", "BankInfoNCE": "eim.losses.infonce",
}

__all__ = ["CheckpointError", "ConfigError", "DataError", "EIMError", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(_import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eim' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
