"""Atomic, pickle-free persistence: safetensors for tensors, JSON for metadata.

Every write goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed
over the target, so an interrupted run never leaves a truncated checkpoint, bank or cache.
"""

import json
import os
import tempfile
from pathlib import Path

from eim.errors import CheckpointError


def _atomic(path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_tensors(tensors, path, metadata=None):
    """``{name: tensor}`` -> safetensors file, atomically. ``metadata`` values become strings."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                metadata={k: str(v) for k, v in (metadata or {}).items()})
    _atomic(path, lambda f: f.write(data))


def load_tensors(path, device="cpu"):
    """-> (tensors, metadata). A missing or corrupt file raises :class:`CheckpointError`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({type(e).__name__}: {e}); it is corrupt or "
            "truncated — delete it and re-run (with --resume, the previous checkpoint is used)"
        ) from None


def write_json(obj, path):
    _atomic(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()))


def read_json(path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
