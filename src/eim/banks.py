"""Feature banks: one frozen key per training sample, built once, cached, fingerprinted (docs/design.md §2).

- ``text``  (Kt, ``loss_IE``): ``CLIPModel.get_text_features`` of each caption
  (``Sample.ie_text``: the data's caption, e.g. ScienceQA's ``captions.json``, else the sample's
  response) on the CLIP tokenizer's own encoding — CLIP's text feature at its EOT, projected;
  the un-projected pooled output when ``eim.ie_head`` is ``linear``.
- ``embed`` (Ke, ``loss_ST``): mean of the LLM's input-embedding vectors over the sample's
  instruction + response tokens (padding and BOS excluded).
- ``lm``    (Kb, ``loss_LM``): the *original* (freshly loaded, never trained) LLM's final hidden
  state at the [EOS] appended to instruction + response.

Row i is dataset index i. Rows are stored L2-normalised in ``eim.bank_dtype`` as
``RUN_DIR/banks/<name>.safetensors`` with ``<name>.json`` holding the fingerprint (model id and
weights digest, tokenizer digest, dataset file digests and record count, settings). A bank whose
fingerprint differs is rebuilt, or refused under ``--no-rebuild``; never used silently. Building
writes ``<name>.parts/`` one block of ``PART_ROWS`` rows at a time, so an interrupted build
resumes.

Several processes (``torchrun``/``accelerate launch``: a process group is initialised): rank 0
checks the fingerprint and tells the others; a build splits the blocks across ranks (each encodes
a contiguous ~N/W of the rows), rank 0 joins the parts into the bank file, and every rank loads
it. ``shard=True``: each rank keeps only its contiguous row range
(:func:`eim.distributed.shard_range`, read straight from the file) and the EIM losses use
:func:`eim.losses.infonce.sharded_bank_infonce` — for banks too large for one device.

    eim banks build clipcap_eim --data DATA/coco --out runs/eim
"""

import json
import math
import os
import shutil
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import AutoTokenizer, CLIPModel

from eim import distributed as D
from eim.config import MAIN, Recipe
from eim.data.dataset import Dataset
from eim.digests import file_digest, folder_digest
from eim.errors import EIMError
from eim.io import atomic_write, load_tensors, save_tensors, write_json
from eim.losses import BANK_NAMES
from eim.model.lm import build_lm
from eim.model.splice import TextEncoder, pad_ids
from eim.model.vision import features_of
from eim.progress_bar import progress_bar

BANK_VERSION = 2  # bump when the way a bank is computed changes (2: CLIP's own text encoding and pooling)
PART_ROWS = 4096  # rows per part file (one block of an interrupted or multi-process build)


def bank_dir(run_dir: Union[str, os.PathLike], banks_dir: Optional[Union[str, os.PathLike]] = None,
             name: str = MAIN) -> Path:
    """Where the banks of dataset ``name`` live: ``banks_dir`` (default ``RUN/banks``) for the main
    dataset, its ``<name>/`` subfolder for a stage's named one (row i is that dataset's sample i)."""
    root = Path(banks_dir) if banks_dir else Path(run_dir) / "banks"
    return root if name == MAIN else root / name


def dataset_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """What identifies a dataset's rows: format, split, size and index-file digests; a
    :class:`eim.data.mixture.Mixture` adds its parts' own, in order (the order sets the rows)."""
    fp = {"format": getattr(dataset, "format", None), "split": getattr(dataset, "split", None),
          "records": len(dataset),
          "files": {str(f): file_digest(f) for f in getattr(dataset, "files", [])}}
    if getattr(dataset, "parts", None) is not None:
        fp["parts"] = [dataset_fingerprint(part) for part in dataset.parts]
    return fp


def _write_bank(path, part_files, n, dtype, metadata):
    """Write the parts' rows, in order, as one safetensors file holding ``bank`` [n, d].

    Streams: the header first, then each part's bytes, so joining an 82 GB bank (10M × 4096
    float16) needs one part in memory, not the bank twice (``safetensors.torch.save`` builds the
    whole file in memory)."""
    widths = set()
    rows = 0
    for p in part_files:
        with safe_open(str(p), framework="pt") as f:
            shape = f.get_slice("rows").get_shape()
        rows, _ = rows + shape[0], widths.add(shape[1])
    if rows != n or len(widths) > 1:
        raise EIMError(f"{path}: parts hold {rows} rows of widths {sorted(widths)} for {n} samples; "
                       f"delete {path.parent / (path.stem + '.parts')} and rebuild")
    d = widths.pop() if widths else 1
    code = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}[dtype]
    nbytes = n * d * dtype.itemsize
    header = json.dumps({"__metadata__": metadata,
                         "bank": {"dtype": code, "shape": [n, d], "data_offsets": [0, nbytes]}}).encode()
    header += b" " * (-len(header) % 8)  # the format aligns the data to 8 bytes

    def write(f):
        f.write(struct.pack("<Q", len(header)) + header)
        for p in part_files:
            t = load_tensors(p)[0]["rows"].to(dtype).contiguous()
            f.write(t.view(torch.uint8).numpy().tobytes())

    atomic_write(path, write)


class BankProvider:
    """Builds or loads the banks a run needs; ``get(name) -> Tensor [N, d]`` (unit rows), or this
    rank's rows ``[shard_offset(name), +n)`` when ``sharded``."""

    NAMES = BANK_NAMES  # text, embed, lm: the banks the losses in eim.losses read

    def __init__(self, recipe: Recipe, dataset: Dataset, run_dir: Union[str, os.PathLike], model: Any = None,
                 tokenizer: Any = None, image_processor: Any = None, no_rebuild: bool = False, quiet: bool = False,
                 device: Union[str, torch.device] = "cpu", banks_dir: Optional[Union[str, os.PathLike]] = None,
                 shard: bool = False) -> None:
        self.recipe, self.dataset = recipe, dataset
        self.dir = Path(banks_dir) if banks_dir else Path(run_dir) / "banks"
        self.model, self.tok, self.proc = model, tokenizer, image_processor
        self.no_rebuild, self.quiet, self.device = no_rebuild, quiet, device
        self.shard = shard
        self._banks, self._groups = {}, None
        self.events = []  # ("built" | "reused", name): what happened, for tests and the demo

    # --- public ---------------------------------------------------------------------------------
    @property
    def sharded(self) -> bool:
        """True when ``get`` returns row shards (``shard=True`` and several processes)."""
        return self.shard and D.is_distributed()

    def shard_offset(self, name: str) -> int:
        """First bank row this rank holds (0 unless ``sharded``); the same for every bank."""
        return self._rows()[0]

    def _rows(self):
        """(offset, count) of the rows this rank holds."""
        if not self.sharded:
            return 0, len(self.dataset)
        return D.shard_range(len(self.dataset), D.world_size(), D.rank())

    def get(self, name: str) -> torch.Tensor:
        if name not in self._banks:
            self._banks[name] = self._load_or_build(name)
        return self._banks[name]

    def groups(self) -> torch.Tensor:
        """LongTensor [N]: an id per distinct image (``same_image: mask``); text-only rows unique."""
        if self._groups is None:
            ids, out = {}, []
            for i in range(len(self.dataset)):
                s = self.dataset[i]
                key = s.meta.get("image_key", s.image) if s.image else ("row", i)
                out.append(ids.setdefault(key, len(ids)))
            self._groups = torch.tensor(out, dtype=torch.long)
        return self._groups

    def fingerprint(self, name: str) -> dict[str, Any]:
        r = self.recipe
        if name == "text":
            model = {"id": r.vision.name_or_path, "digest": folder_digest(r.vision.name_or_path),
                     "head": r.eim.ie_head}
            dtype = r.vision.dtype
        else:
            model = {"id": r.lm.name_or_path, "gguf": r.lm.gguf_file, "digest": folder_digest(r.lm.name_or_path)}
            dtype = r.lm.dtype
        if dtype != "float32":  # the frozen model computes in the recipe's dtype (float32 banks keep their fingerprint)
            model["dtype"] = dtype
        return {"bank": name, "version": BANK_VERSION, "model": model, "data": dataset_fingerprint(self.dataset),
                "settings": {"max_length": r.train.max_length, "dtype": r.eim.bank_dtype}}

    # --- load / build ---------------------------------------------------------------------------
    def _load_or_build(self, name):
        if name not in self.NAMES:
            raise EIMError(f"unknown bank {name!r} (allowed: {', '.join(self.NAMES)})")
        path = self.dir / f"{name}.safetensors"
        D.ensure_process_group()  # `torchrun -m eim.cli banks build`: the ranks share the build
        # rank 0 decides (one fingerprint: weight digests are read once), everyone follows
        decision = self._decide(name, path) if D.rank() == 0 else None
        action, fp, msg = D.broadcast_object(decision)
        if action == "error":
            raise EIMError(msg)
        if msg:
            self._say(msg)
        if action == "build":
            part_files = self._build(name, fp)
            if D.rank() == 0:  # join the parts into the bank file, one part in memory at a time
                _write_bank(path, part_files, len(self.dataset), getattr(torch, self.recipe.eim.bank_dtype),
                            {"fingerprint": json.dumps(fp)})
                write_json(fp, self.dir / f"{name}.json")
                shutil.rmtree(self.dir / f"{name}.parts", ignore_errors=True)
            D.barrier()  # the file is whole before anyone reads it
        self.events.append(("built" if action == "build" else "reused", name))
        return self._read(path)

    def _decide(self, name, path):
        """-> (action "reuse" | "build" | "error", fingerprint, message)."""
        fp = self.fingerprint(name)
        meta = self.dir / f"{name}.json"
        if path.exists() and meta.exists():
            old = json.loads(meta.read_text())
            if old == fp:
                return "reuse", fp, f"bank {name}: fingerprint matches, reusing {path}"
            diff = sorted(k for k in fp if old.get(k) != fp[k])
            if self.no_rebuild:
                return "error", fp, (f"{path}: feature bank was built from different inputs (changed: {', '.join(diff)}) "
                                     "and --no-rebuild is set; delete the bank or drop --no-rebuild to rebuild it")
            return "build", fp, f"bank {name}: inputs changed ({', '.join(diff)}), rebuilding"
        return "build", fp, None

    def _read(self, path):
        """The whole bank, or this rank's rows of it when sharded (read without the rest)."""
        if not self.sharded:
            return load_tensors(path)[0]["bank"]
        off, n = self._rows()
        with safe_open(str(path), framework="pt") as f:
            return f.get_slice("bank")[off : off + n]

    def _build(self, name, fp):
        """Encode every row in index order, one ``PART_ROWS`` block per part file, so an
        interrupted build resumes; with several ranks each encodes a contiguous share of the
        blocks. Returns the part files, in row order."""
        parts = self.dir / f"{name}.parts"
        P, N, bs = PART_ROWS, len(self.dataset), self.recipe.eim.bank_batch_size
        layout = {**fp, "part_rows": P}
        if D.rank() == 0:
            parts.mkdir(parents=True, exist_ok=True)
            fp_file = parts / "fingerprint.json"
            if fp_file.exists() and json.loads(fp_file.read_text()) != layout:
                shutil.rmtree(parts)
                parts.mkdir(parents=True)
            write_json(layout, fp_file)
        D.barrier()  # the parts folder is ready before anyone writes into it
        dtype = getattr(torch, self.recipe.eim.bank_dtype)
        blocks = math.ceil(N / P)
        first, count = D.shard_range(blocks, D.world_size(), D.rank())
        todo = [b for b in range(first, first + count) if not (parts / f"{b * P}.safetensors").exists()]
        if todo:
            prepare, encode = self._encoder(name)
            rows = sum(min(P, N - b * P) for b in todo)
            bar = progress_bar(total=rows, desc=f"bank {name}", disable=self.quiet or D.rank() != 0)
            with torch.inference_mode():
                for b in todo:
                    s, e = b * P, min((b + 1) * P, N)
                    seqs = prepare([self.dataset[j] for j in range(s, e)])  # token ids per row
                    # batches of similar length (as transformers' group_by_length): less padding to
                    # encode; each row's feature is put back at its own index
                    order = sorted(range(e - s), key=lambda i: len(seqs[i]))
                    block = None
                    for i in range(0, e - s, bs):
                        idx = order[i : i + bs]
                        feats = F.normalize(encode([seqs[j] for j in idx]).float(), dim=-1).to(dtype).cpu()
                        if block is None:
                            block = feats.new_empty(e - s, feats.shape[1])
                        block[torch.tensor(idx)] = feats
                        bar.update(len(idx))
                    save_tensors({"rows": block}, parts / f"{s}.safetensors")
            bar.close()
        D.barrier()  # every block is written
        return [parts / f"{b * P}.safetensors" for b in range(blocks)]

    def _encoder(self, name):
        """-> (prepare, encode): ``prepare(samples)`` gives each row's token ids, ``encode(seqs)``
        a batch's features (float, un-normalised) from ids of any order."""
        r = self.recipe
        if name == "text":
            clip = CLIPModel.from_pretrained(r.vision.name_or_path, dtype=getattr(torch, r.vision.dtype)).to(self.device).eval()
            ctok = AutoTokenizer.from_pretrained(r.vision.name_or_path)
            max_len = clip.config.text_config.max_position_embeddings

            def prepare(samples):
                # the tokenizer's own encoding (<|startoftext|> ... <|endoftext|>, cut at the text
                # model's length)
                return ctok([s.ie_text for s in samples], truncation=True, max_length=max_len).input_ids

            def encode(seqs):
                # padded by the tokenizer itself, and CLIP's own pooling: the row is what CLIPModel
                # defines as the caption's text feature (get_text_features; its pooled output for a
                # linear head)
                enc = ctok.pad({"input_ids": seqs}, padding=True, return_tensors="pt").to(self.device)
                if r.eim.ie_head == "clip_projection":
                    return features_of(clip.get_text_features(input_ids=enc.input_ids, attention_mask=enc.attention_mask))
                return clip.text_model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).pooler_output

            return prepare, encode
        # embed / lm: the original LLM, freshly loaded so training never leaks into a bank
        lm, tok = build_lm(replace(r.lm, trainable="full"))
        lm = lm.to(self.device).eval()
        enc = TextEncoder(tok, r.train.max_length)
        emb = lm.get_input_embeddings()
        body = lm.base_model  # the decoder without its LM head: the bank needs no vocabulary logits

        def prepare(samples):
            seqs = enc.encode_bare_many(samples)  # every turn in the bare layout, whatever the template (§2)
            if name == "embed":  # instruction + response tokens: drop lead (BOS) and the EOS
                seqs = [q[len(enc.lead):-1] or q[-1:] for q in seqs]
            return seqs

        def encode(seqs):
            ids, lengths = pad_ids(seqs, tok.pad_token_id)
            mask = (torch.arange(ids.shape[1])[None] < lengths[:, None])
            ids, mask = ids.to(self.device), mask.to(self.device)
            if name == "embed":
                e = emb(ids) * mask[..., None]
                return e.sum(1) / lengths.to(self.device)[:, None]
            if body is not lm:  # final hidden state (after the last norm, = hidden_states[-1])
                h = body(input_ids=ids, attention_mask=mask.long(), use_cache=False).last_hidden_state
            else:
                h = lm(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True,
                       use_cache=False).hidden_states[-1]
            return h[torch.arange(len(seqs)), lengths - 1]  # state at [EOS]

        return prepare, encode

    def _say(self, msg):
        if not self.quiet and D.rank() == 0:
            print(msg, flush=True)
