"""EIM: improving multi-modal LLMs through the training process alone.

Library first: everything here is importable without the CLI (``eim.cli`` only parses and
calls; its entry points are in :mod:`eim.api`). The method and every decision where the paper
(Bai, Su, Bai, PLOS ONE 2025) is silent are in ``docs/design.md``; section numbers in docstrings
refer to it.
"""

import os as _os

# Idle OpenMP threads sleep instead of spinning: on a shared or small CPU machine, spinning
# threads made small-model steps ~20x slower (measured on 2 cores). Only effective when eim is
# imported before torch (the CLI does); an explicit setting in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from eim.errors import EIMError, ConfigError, DataError, CheckpointError  # noqa: E402,F401


def __getattr__(name):
    # Lazy so that `import eim` stays cheap (no torch import for `eim --help`).
    if name in ("bank_infonce", "BankInfoNCE"):
        from eim.losses import infonce  # lazy: `import eim` must not import torch

        return getattr(infonce, name)
    raise AttributeError(f"module 'eim' has no attribute {name!r}")
