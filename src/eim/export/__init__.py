"""Exporting a trained run into the formats other tools serve (docs/design.md §12).

    from eim.export import export
    export("runs/llava", "llava-exported", format="llava-hf")

Nothing EIM adds is used at inference, so an EIM-trained model is an ordinary model: ``llava-hf``
writes the folder ``transformers.LlavaForConditionalGeneration`` and ``AutoProcessor`` load
(:mod:`eim.export.llava_hf`), with no ``eim`` installed. The folder is written beside ``out`` and
moved into place once complete, so a failed export leaves nothing half written.
"""

from pathlib import Path

from eim.api import load_for_inference
from eim.errors import EIMError
from eim.export.llava_hf import ExportError, check_exportable, export_llava_hf
from eim.io import atomic_dir, write_json
from eim.training.checkpoint import find_checkpoint

EXPORT_FORMATS = {"llava-hf": (check_exportable, export_llava_hf)}  # format -> (recipe check, writer)
DTYPES = ("float32", "bfloat16", "float16")


def export(checkpoint, out, format="llava-hf", dtype="float32", overwrite=False):
    """Write ``checkpoint`` (a run folder, stage folder or ``model.safetensors``) to ``out`` in
    ``format``; returns the summary (also ``out/eim_export.json``)."""
    if format not in EXPORT_FORMATS:
        raise EIMError(f"unknown export format {format!r} (allowed: {', '.join(EXPORT_FORMATS)})")
    if dtype not in DTYPES:
        raise EIMError(f"--dtype {dtype!r}: allowed {', '.join(DTYPES)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise EIMError(f"{out} is not empty: nothing was written; choose a new --out or pass --overwrite")
    recipe, files = find_checkpoint(checkpoint)
    check, write = EXPORT_FORMATS[format]
    check(recipe)  # before the weights load: a refused run costs nothing
    model, tok, proc, recipe = load_for_inference(checkpoint)
    with atomic_dir(out) as tmp:
        summary = write(model, tok, proc, recipe, tmp, dtype=dtype)
        summary["checkpoint"] = str(Path(files[-1]).resolve())
        summary["stage_files"] = [str(Path(f).resolve()) for f in files]
        write_json(summary, tmp / "eim_export.json")
    return summary


__all__ = ["DTYPES", "EXPORT_FORMATS", "ExportError", "export"]
