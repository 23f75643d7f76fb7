"""Helpers the tests share: tiny image sets, recipes pointed at the tiny models, interrupts, and
2-process launches. Fixtures live in ``conftest.py``."""

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from eim.recipe import load_recipe
from eim.data.sample import Sample

TESTS = Path(__file__).parent  # distributed_driver.py lives here

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
SHAPES = ("circle", "square")


class ListDataset(torch.utils.data.Dataset):
    """A dataset over a list of Samples (the loaders' shape), for model/trainer tests."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def draw(path, colour, shape, size=32):
    """A shape on white, ``size`` pixels square (or ``(width, height)``)."""
    w, h = (size, size) if isinstance(size, int) else size
    im = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(im)
    box = (6, 6, w - 6, h - 6)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLOURS[colour])
    im.save(path)
    return str(path)


def caption_samples(root, n_images=8, captions_per_image=1, seed=0):
    rng = random.Random(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    for i in range(n_images):
        c, s = combos[i % len(combos)]
        p = draw(root / f"img{i}.png", c, s)
        for j in range(captions_per_image):
            cap = rng.choice([f"a {c} {s}.", f"a {s} that is {c}.", f"one {c} {s} on white."])
            samples.append(Sample(index=len(samples), image=p, instruction="", response=cap, image_id=i,
                                  meta={"image_key": i}))
    return samples


TEXTS = [f"a {c} {s} that is on white one ." for c in COLOURS for s in SHAPES] * 5


def llava_datasets(root, question="What is shown here?"):
    """LLaVA's two stages' data over 8 drawn shapes: ``captions`` (instruction empty) and
    ``instruct`` (``question`` -> the caption), as ``{name: dataset}`` for ``train``."""
    caps = caption_samples(root, 8, captions_per_image=2)
    inst = [Sample(index=i, image=s.image, instruction=question, response=s.response, image_id=s.image_id)
            for i, s in enumerate(caps)]
    out = {}
    for name, rows in (("captions", caps), ("instruct", inst)):
        d = ListDataset(rows)
        d.files, d.format, d.split = [], "list", "train"
        out[name] = d
    return out


def tiny_recipe(tiny_dir, name="clipcap", lm="gpt2", overrides=None):
    """A shipped recipe pointed at the tiny models, with small sizes."""
    base = {
        "vision.name_or_path": str(tiny_dir / "clip"),
        "lm.name_or_path": str(tiny_dir / lm),
        "train.batch_size": 4,
        "train.warmup_steps": 0,
        "train.lr": 1e-3,
        "train.log_every": 1,
        "generation.num_beams": 1,
        "generation.max_new_tokens": 8,
    }
    if name == "clipcap":
        base["projector.prefix_length"] = 2
    if name.startswith("llava"):  # vicuna_v1's system line is 143 tokens of the tiny tokenizers (128 positions)
        base["data.system"] = "A chat."
    # the real-size recipes' memory levers off: tiny float32 models, one batch size for every stage
    base.update({"vision.dtype": "float32", "lm.dtype": "float32", "train.gradient_checkpointing": False,
                 "train.cache_clip_features": True})
    for i in range(len(load_recipe(name).stages)):
        base[f"stages.{i}.batch_size"] = None
    base.update(overrides or {})
    return load_recipe(name, base)


def steps(name, n, k=1, **extra):
    """Overrides giving the first ``k`` stages of a recipe ``n`` steps each."""
    over = {}
    for i in range(k):
        over[f"stages.{i}.epochs"] = None
        over[f"stages.{i}.steps"] = n
    over.update(extra)
    return over


class Interrupt(Exception):
    pass


def interrupt_at(stage, step):
    """A trainer callback that raises :class:`Interrupt` after ``step`` of ``stage``."""
    def cb(trainer, k, s):
        if (k, s) == (stage, step):
            raise Interrupt

    return cb


def final_weights(run_dir):
    """Every tuned tensor of a run: its stages' files composed in stage order, as readers load them."""
    from eim.training.checkpoint import run_weights

    return run_weights(run_dir)


def launch(args, env=None, launcher="torchrun", config=None, precision="no", deepspeed_json=None, timeout=300):
    """Run a 2-process job; returns the CompletedProcess (output in .stdout). ``launcher``: torchrun,
    or accelerate launch: DDP (``--multi_gpu``, which falls back to CPU processes and gloo here), the
    shipped accelerate ``config`` file (``deepspeed_zero2``, ...) with 2 processes, or a DeepSpeed JSON
    file (``deepspeed_json``: ``--use_deepspeed --deepspeed_config_file``): without a GPU DeepSpeed
    runs on CPU processes over gloo (accelerate's ``--cpu`` would turn DeepSpeed off). ``precision``
    None: the config's own mixed precision (no ``--mixed_precision`` given)."""
    mixed = [] if precision is None else ["--mixed_precision", precision]
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    elif config is not None:
        from eim.commands.accelerate_config import config_path

        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path(config)),
               "--num_processes", "2", "--num_machines", "1", *mixed, "--main_process_port", str(free_port())]
    elif deepspeed_json is not None:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--use_deepspeed", "--deepspeed_config_file",
               str(deepspeed_json), "--num_processes", "2", "--num_machines", "1", *mixed,
               "--main_process_port", str(free_port())]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", precision, "--dynamo_backend", "no",
               "--main_process_port", str(free_port())]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.run(cmd + args, capture_output=True, text=True, env=full_env, timeout=timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(res):
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


def write_llava_world(root, width=320, n_images=8, n_text=8):
    """LLaVA-1.5's two files, tiny, as a user's would be: ``captions.json`` (LCS-558K's layout, one
    ``<image>`` question and a caption each) and ``instruct.json`` (mix665k's: multi-turn conversations
    on ``n_images`` images, ``<image>`` before or after the question, and ``n_text`` text-only
    conversations, enough for LLaVA's modality grouping to make whole batches of 4 text-only), with
    images (square and not) under ``images/``, a tiny CLIP and a tiny LLaMA of hidden ``width`` (320:
    its layers and the projector's are over DeepSpeed's 1e5-element persistence threshold, so ZeRO-3
    really partitions them). Returns ``{"root", "images", "clip", "llama", "captions", "instruct"}``."""
    import json

    from eim_harness.tiny import make_clip_tokenizer, make_tiny_clip, make_tiny_lm, make_tokenizer

    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    make_tiny_clip(root / "clip", make_clip_tokenizer(TEXTS, vocab_size=300))
    make_tiny_lm(root / "llama", make_tokenizer(TEXTS, vocab_size=300, llama_specials=True), arch="llama",
                 width=width, max_positions=512)
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    captions, instruct = [], []
    for i in range(n_images):
        c, s = combos[i % len(combos)]
        draw(images / f"{i}.png", c, s, size=(32, 24) if i % 2 else 32)
        captions.append({"id": f"cap{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nRender a short caption."}, {"from": "gpt", "value": f"a {c} {s}."}]})
        q = "What is shown here?\n<image>" if i % 2 else "<image>\nWhat is shown here?"
        instruct.append({"id": f"img{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": q}, {"from": "gpt", "value": f"A {c} {s} on white."},
            {"from": "human", "value": "What colour is it?"}, {"from": "gpt", "value": f"It is {c}."}]})
    for i in range(n_text):
        c, s = combos[i % len(combos)]
        instruct.append({"id": f"text{i}", "conversations": [
            {"from": "human", "value": f"Describe a {c} {s}."}, {"from": "gpt", "value": f"a {s} that is {c} on white one."}]})
    instruct = instruct[::2] + instruct[1::2]  # the modalities interleaved, as in a real mix
    (root / "captions.json").write_text(json.dumps(captions))
    (root / "instruct.json").write_text(json.dumps(instruct))
    return {"root": root, "images": images, "clip": root / "clip", "llama": root / "llama",
            "captions": root / "captions.json", "instruct": root / "instruct.json"}
