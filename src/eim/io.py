"""Atomic, pickle-free persistence: safetensors for tensors, JSON for metadata (docs/design.md §8).

Every write goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed
over the target, so an interrupted run never leaves a truncated checkpoint, bank or cache. A
folder written as a whole (an encoder cache, a converted model) is filled in a temporary sibling
and renamed into place (:func:`atomic_dir`, :func:`replace_dir`). A write that fails (a full
disk) raises :class:`eim.errors.WriteError` naming the file; the file it would have replaced is
untouched.
"""

import contextlib
import errno
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save

from eim.errors import CheckpointError, WriteError


def atomic_write(path, write):
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            raise _write_error(path, e) from e
        raise


def _write_error(path, e):
    err = WriteError(f"cannot write {path}: {os.strerror(e.errno)} (errno {e.errno}); {Path(path).name} is as it "
                     "was before this write — free space (or fix the disk) and run the command again")
    err.path, err.reason = Path(path), f"{os.strerror(e.errno)} (errno {e.errno})"
    return err


def append_line(path, line):
    """Append one line to a log (``metrics.jsonl``); a full disk is a :class:`WriteError`."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as e:
        raise _write_error(path, e) from e


def save_tensors(tensors, path, metadata=None):
    """``{name: tensor}`` -> safetensors file, atomically. ``metadata`` values become strings."""
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                metadata={k: str(v) for k, v in (metadata or {}).items()})
    atomic_write(path, lambda f: f.write(data))


def load_tensors(path, device="cpu"):
    """-> (tensors, metadata). A missing or corrupt file raises :class:`CheckpointError`."""
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
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()))


def read_json(path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def temp_sibling(final):
    """A new empty folder beside ``final`` (same filesystem, so renaming it into place is atomic);
    made with mkdir, not mkdtemp, so it gets the usual permissions rather than 0700."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    return tmp


@contextlib.contextmanager
def atomic_dir(final):
    """Yield a temporary sibling of ``final`` to fill; on success it replaces ``final``, on any
    error (or interrupt) it is removed, so ``final`` is never half written."""
    final = Path(final)
    tmp = temp_sibling(final)
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src, final):
    """Rename folder ``src`` to ``final``, replacing a ``final`` that exists: it is renamed to
    ``final.old`` first and removed last, so at every instant one whole copy is in place or
    :func:`recover_dir` restores one."""
    src, final = Path(src), Path(final)
    old = final.with_name(final.name + ".old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    src.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(final):
    """After a kill inside :func:`replace_dir`: put ``final.old`` back when ``final`` is missing,
    drop it when ``final`` is whole."""
    final = Path(final)
    old = final.with_name(final.name + ".old")
    if old.exists():
        if final.exists():
            shutil.rmtree(old)
        else:
            old.rename(final)
