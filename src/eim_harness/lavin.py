"""``eim demo --task scienceqa|mme``: LaVIN vs LaVIN + EIM on the embedded data, end to end (docs/harness.md).

    eim demo --task scienceqa --preset smol    # SmolLM2-135M as the LLM: within an hour on a CPU
    eim demo --task scienceqa                  # tiny preset: a tiny LLaMA, drilled on multiple choice first
    eim demo --task mme                        # tiny preset: LaVIN as a chatbot (LLaVA + Alpaca mixture), MME scores
    eim demo --task mme --preset smol          # the same with SmolLM2-135M

The tiny presets take minutes on a laptop-class CPU; measured times are in benchmarks/RESULTS.md.

``scienceqa``: train ``lavin`` (baseline) and ``lavin_eim`` on the shapes world's ScienceQA
problems in LaVIN's QCM-ALE format (text-only problems go through the same path, with no image
tokens and LaVIN's "no image" modality token), then score accuracy by category on the test split.
``mme``: train both as chatbots on LaVIN's mixture of image and text instructions
(:func:`chat_mixture`: the LLaVA-format conversations, short-answer yes/no questions on the same
images, and Alpaca-format text instructions; the paper's chatbot run used LLaVA-158k + Alpaca)
and score the MME-format yes/no questions (``mme/``; its schedule was chosen on ``mme_val/``).
Default output folder: ``eim-demo-<task>``; ``report.html`` and ``summary.json`` land in it.

Decisions, each visible in the report:

- **LLM.** LaVIN is a LLaMA-family method, so both presets use a LLaMA: ``smol`` the real
  SmolLM2-135M-Instruct (:mod:`eim_harness.smol`), ``tiny``/``test`` a tiny ``LlamaForCausalLM``
  pretrained by :mod:`eim_harness.pretrain` on the training text (context long enough for the
  ScienceQA prompts), in its own cache (``encoders-llama/<task>/``) so the ClipCap demo's GPT-2
  cache in the same folder is never overwritten, nor one task's LLM by another's. The CLIP is the
  demo's small pretrained one. For ScienceQA the tiny LLaMA is then drilled on multiple-choice
  problems (:data:`TINY_DRILLS`, :func:`eim_harness.pretrain.drill_lm`): the skill a real LLaMA
  brings and LaVIN relies on (docs/harness.md). For MME it is drilled on yes/no questions about
  scenes written out in words instead (:data:`YESNO_DRILLS`) and also pretrains on the
  Alpaca-format file.
- **Equal training on the final objective.** LaVIN trains ``steps`` optimiser steps on
  ``loss_base``. LaVIN + EIM gets the same ``steps`` steps on ``loss_base``, split as in the
  recipe (LaVIN's 20 epochs -> EIM's Adapter 10 + base+IE 10): ``steps - steps // 2`` in the
  Adapter stage, ``steps // 2`` in base + loss_IE. Its ``loss_ST`` and ``loss_LM`` stages are
  reported as extra cost, as in the ClipCap demo.
- **Budget.** Token count drives the cost on a CPU: ``train.max_length`` is the fewest tokens that
  keep every training prompt whole with its answer sentence, so long problems lose the rationale
  ("BECAUSE: ...") past it (see :func:`fit_lengths`); training
  uses the first ``train_samples`` training samples (the ``loss_LM`` bank runs the LLM over each
  of them once); evaluation generates ``max_new_tokens`` tokens, enough for "The answer is X."
  (the scorer reads only the letter), on the *whole* test split of the generated world.
"""

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from transformers import AutoTokenizer

from eim.recipe import load_recipe
from eim.data import load_dataset
from eim.data.base import check_index
from eim.data.mixture import Mixture
from eim.evaluation.intervals import MME_METRICS as MME_INTERVALS, SCIENCEQA_METRICS
from eim.evaluation.mme import flat_scores
from eim_harness.encoders import cached_encoders
from eim_harness.pipeline import say
from eim_harness.report import write_lavin_report
from eim_harness.task import Task
from eim.model.splice import TextEncoder

VARIANTS = ("lavin", "lavin_eim")
LABELS = {"lavin": "LaVIN (baseline)", "lavin_eim": "LaVIN + EIM"}
SQA_METRICS = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg")
MME_SUBTASKS = ("existence", "count", "position", "color")  # the subtasks the shapes world has
# MME: scores (points, max 200 per subtask), accuracy / accuracy+ over all images and each
# subtask's accuracy (%): whether LaVIN learned a subtask at all shows in its own accuracy
# (docs/harness.md), which the pooled score can hide
MME_ACCURACIES = tuple(f"{s}_acc" for s in MME_SUBTASKS)
MME_METRICS = ("perception",) + MME_SUBTASKS + ("mme_acc", "mme_acc_plus") + MME_ACCURACIES
# tiny/test LLM: a LLaMA (LaVIN's architecture) instead of the ClipCap demo's GPT-2; ScienceQA
# prompt + answer sentence is up to ~100 tokens, so it is pretrained on 128-token windows.
TINY_LLAMA = {"arch": "llama", "context": 128, "max_positions": 256, "batch_size": 16}


@dataclass
class TaskPreset:
    """Data, schedule and decoding of a task demo; every field is a knob for a quick experiment."""

    world_train: int = 2000  # shapes world size (= the ClipCap demo's, so its data can be shared)
    world_test: int = 200  # test images = ScienceQA test problems (scored in full); MME gets test//4 per subtask
    size: int = 64  # image side in pixels
    train_samples: Optional[int] = None  # first N training samples (None: all); bounds the loss_LM bank cost
    steps: int = 300  # optimiser steps on loss_base, equal for both variants (EIM: Adapter + base+IE)
    st_steps: int = 60  # EIM stage 1 (loss_ST), extra cost
    lm_steps: int = 60  # EIM stage 2 (loss_LM), extra cost
    batch_size: int = 16
    lr: float = 9e-3  # LaVIN's ScienceQA lr (adapters only, zero-initialised)
    warmup: int = 20
    # text tokens per training sample; None: the fewest that keep every training prompt whole with
    # its answer sentence ("The answer is X."; LLaVA: the whole response) and EOS (fit_lengths)
    max_length: Optional[int] = None
    max_prompt_tokens: Optional[int] = None  # prompt tokens kept at evaluation; None: the longest test prompt
    max_new_tokens: int = 8  # "The answer is X." (ScienceQA) / "Yes"/"No" (MME)
    beams: int = 1
    eval_batch_size: int = 16
    lm: str = "tiny-llama"  # tiny-llama: eim_harness.encoders' tiny preset as a LLaMA | smol: SmolLM2-135M
    encoders: dict = field(default_factory=dict)  # overrides of eim_harness.encoders.PRESETS (sizes, steps)
    overrides: dict = field(default_factory=dict)  # extra recipe overrides for both variants


CHAT_CORPUS = ["coco", "scienceqa", "llava", "alpaca"]  # the MME task's tiny-LLM corpus (eim_harness.encoders)
# the MME task's tiny LLM: yes/no questions about scenes written out in words (quizzes.yesno_pairs)
YESNO_DRILLS = {"kind": "yesno", "problems": 16000, "steps": 3000, "batch_size": 32, "lr": 1e-3}
TINY_DRILLS = {"problems": 16000, "scene_fraction": 0.5, "steps": 3000, "batch_size": 32, "lr": 1e-3}

_TEST_ENCODERS = {"vocab_size": 300,
                  "clip": dict(image_size=32, width=32, layers=1, heads=2, text_width=32, projection_dim=32,
                               steps=5, batch_size=16),
                  "lm": dict(width=32, layers=1, heads=2, steps=5, batch_size=8, context=64)}

PRESETS = {
    "scienceqa": {
        # The tiny LLaMA is drilled on 16,000 multiple-choice problems (half of them scenes written
        # out in words) before LaVIN sees it: the skill a real LLaMA brings (docs/harness.md).
        # Chosen on the validation split: 1500 LaVIN steps (300 left the image unused).
        "tiny": TaskPreset(steps=1500, warmup=100, encoders={"drills": TINY_DRILLS}),
        # SmolLM2-135M: sized so both variants finish within an hour on a laptop-class CPU (the
        # per-step costs it was sized from, and the measured run, are in benchmarks/RESULTS.md):
        # 1,000 training samples (they bound the loss_LM bank), 300 loss_base steps, batch 8
        # (tokens are the cost), lr = LaVIN's 9e-3 at batch 32 scaled by sqrt(8/32), not chosen
        # on validation at this size.
        "smol": TaskPreset(train_samples=1000, steps=300, st_steps=60, lm_steps=60, batch_size=8, lr=4.5e-3,
                           warmup=20, lm="smol"),
        "test": TaskPreset(world_train=24, world_test=8, size=32, steps=4, st_steps=2, lm_steps=2, batch_size=8,
                           warmup=0, max_new_tokens=6, eval_batch_size=8,
                           encoders={**_TEST_ENCODERS, "drills": {"problems": 16, "scene_fraction": 0.5, "steps": 2,
                                                                  "batch_size": 4}}),
    },
    "mme": {
        # The tiny LLM also pretrains on the chat mixture's Alpaca-format file (its tokenizer knows
        # Alpaca's prompt) and is drilled on yes/no questions about scenes in words. Chosen on the
        # MME validation questions (mme_val/, one seed; docs/harness.md): 1500 steps at lr 3e-3
        # (accuracy 61.5 %; 9e-3: 49.0, 1e-3: 55.2, 3000 steps at 3e-3: 59.2).
        "tiny": TaskPreset(steps=1500, warmup=100, lr=3e-3, max_new_tokens=4,
                           encoders={"corpus": CHAT_CORPUS, "drills": YESNO_DRILLS}),
        # the ScienceQA smol schedule on the first 1,000 samples of the chat mixture; lr: the tiny
        # preset's 3e-3 (chosen on mme_val at batch 16) scaled by sqrt(8/16), not chosen at this size
        "smol": TaskPreset(train_samples=1000, steps=300, st_steps=60, lm_steps=60, batch_size=8, lr=2e-3,
                           warmup=20, max_new_tokens=4, lm="smol"),
        "test": TaskPreset(world_train=24, world_test=8, size=32, steps=4, st_steps=2, lm_steps=2, batch_size=8,
                           warmup=0, max_new_tokens=4, eval_batch_size=8,
                           encoders={**_TEST_ENCODERS, "corpus": CHAT_CORPUS,
                                     "drills": {**YESNO_DRILLS, "problems": 16, "steps": 2, "batch_size": 4}}),
    },
}


class Head:
    """The first ``n`` samples of a dataset (sample i keeps index i, so bank row i is sample i).

    Carries what the trainer and the bank fingerprint read (format, split, mode, files); the
    record count is part of the bank fingerprint, so a bank of the full set is never reused.
    """

    def __init__(self, dataset, n):
        self.dataset, self.n = dataset, min(n, len(dataset))
        for k in ("format", "split", "mode", "files", "path", "root", "parts"):
            if hasattr(dataset, k):
                setattr(self, k, getattr(dataset, k))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.dataset[check_index(i, self.n, "the head")]

    def __iter__(self):
        return (self[i] for i in range(self.n))


def recipe_for(variant, preset, clip_dir, lm_dir, seed, extra=None):
    """``lavin`` / ``lavin_eim`` pointed at the demo encoders with the preset's schedule
    (``extra``: overrides on top, e.g. a study variant's)."""
    p = preset
    over = {
        "vision.name_or_path": str(clip_dir), "lm.name_or_path": str(lm_dir),
        "train.batch_size": p.batch_size, "train.lr": p.lr, "train.warmup_steps": p.warmup,
        "train.seed": seed, "train.save_every": 10_000, "train.log_every": 5,
        "generation.num_beams": p.beams, "generation.max_new_tokens": p.max_new_tokens,
    }
    shipped = load_recipe(variant)
    config = Path(lm_dir) / "config.json"
    if variant.startswith("llama_adapter") and config.exists():  # LLaMA-Adapter adapts the top 30 of
        layers = json.loads(config.read_text())["num_hidden_layers"]  # LLaMA-7B's 32 layers; a tiny LLM: all
        over["lm.adapter_layer"] = min(shipped.lm.adapter_layer, layers)
    if p.max_length is not None:  # None until fit_lengths has seen the data: the recipe's own value
        over["train.max_length"] = p.max_length
    # EIM for adapter models: st -> lm -> adapter -> base+ie, adapter + base+ie = the baseline's steps
    # (without base+ie, as llama_adapter_eim_noie: the adapter stage has them all)
    names = [st.name for st in shipped.stages]
    base = ({"adapter": p.steps - p.steps // 2, "base_ie": p.steps // 2} if "base_ie" in names
            else {"adapter": p.steps, "base": p.steps})
    lengths = [{"st": p.st_steps, "lm": p.lm_steps, **base}[n] for n in names]
    for i, n in enumerate(lengths):
        over[f"stages.{i}.epochs"] = None
        over[f"stages.{i}.steps"] = n
    over.update(p.overrides)
    over.update(extra or {})
    return load_recipe(variant, over)


def llama_encoders(data, cache_dir, p, quiet):
    """The small CLIP and the tiny LLaMA (:data:`TINY_LLAMA`, drilled when ``p.encoders`` says so)
    in ``cache_dir``: the LaVIN and LLaVA demos' and studies' encoders."""
    over = json.loads(json.dumps(p.encoders or {}))
    over["lm"] = {**TINY_LLAMA, **over.get("lm", {})}
    return cached_encoders(data, cache_dir, preset="tiny", quiet=quiet, overrides=over)


def _encoders(out, data, p, quiet, task):
    if p.lm == "smol":  # same cache folder as the ClipCap demo's smol preset: shared when --out is
        return cached_encoders(data, out / "encoders", preset="smol", quiet=quiet, overrides=p.encoders or None)
    # one folder per task: each drills its LLM differently, so sharing one under the same --out
    # would pretrain again at every switch of task
    return llama_encoders(data, out / "encoders-llama" / task, p, quiet)


def _datasets(task, data, p):
    if task == "scienceqa":
        train_ds = load_dataset(data / "scienceqa", split="train", mode="train")
        test_ds = load_dataset(data / "scienceqa", split="test", mode="eval")
    else:
        train_ds = chat_mixture(data)
        test_ds = load_dataset(data / "mme", mode="eval")
    if p.train_samples is not None and p.train_samples < len(train_ds):
        train_ds = Head(train_ds, p.train_samples)
    return train_ds, test_ds


def chat_mixture(data):
    """The chatbot's training data (LaVIN's mixture, docs/design.md §5): the LLaVA conversations,
    the short-answer questions on the same images (``vqa/``) and the Alpaca-format text
    instructions (``alpaca/``), interleaved (:class:`eim.data.mixture.Mixture`)."""
    parts = [data / "llava" / "instruct.json", data / "vqa" / "llava_vqa.json", data / "alpaca" / "alpaca_data.json"]
    return Mixture([load_dataset(path, mode="train") for path in parts])


def answer_part(task, response):
    """What training must keep of a response: ScienceQA's answer sentence, else all of it."""
    return response.split(" BECAUSE:")[0] if task == "scienceqa" else response


def fit_lengths(tokenizer, task, train_ds, test_ds):
    """-> (max_length, max_prompt_tokens) fitted to the data with the LLM's tokenizer (see TaskPreset)."""
    enc = TextEncoder(tokenizer)

    def lengths(texts):
        return [len(x) for x in tokenizer(texts, add_special_tokens=False).input_ids] if texts else [0]

    convs = [train_ds[i].conversation for i in range(len(train_ds))]  # every turn, each answer then EOS
    prompts = lengths([q for c in convs for q, _ in c])
    answers = lengths([TextEncoder.join(q, answer_part(task, a)) for c in convs for q, a in c])
    per_turn, longest, k = [p + a + 1 for p, a in zip(prompts, answers)], 0, 0
    for c in convs:
        longest, k = max(longest, sum(per_turn[k : k + len(c)])), k + len(c)
    max_length = len(enc.lead) + longest
    max_prompt = len(enc.lead) + max(lengths([test_ds[i].instruction for i in range(len(test_ds))]))
    return max_length, max_prompt


def metric_values(task, scores):
    """{metric: value} from a scorer dict: ScienceQA accuracy in %, MME scores (max 200 per subtask)."""
    if task == "scienceqa":
        return {m: scores.get(m) for m in SQA_METRICS}
    flat = flat_scores(scores)
    return {m: flat.get(m) for m in MME_METRICS}


class LaVINTask(Task):
    """LaVIN vs LaVIN + EIM on ``scienceqa`` or ``mme`` (:func:`eim_harness.pipeline.run_comparison`)."""

    variants, labels = VARIANTS, LABELS
    baseline, treatment = "lavin", "lavin_eim"
    key_scale = 1
    data_text = "the shapes world (ScienceQA, LLaVA and MME formats)"

    def __init__(self, name):
        self.name, self.presets = name, PRESETS[name]
        self.metrics = SQA_METRICS if name == "scienceqa" else MME_METRICS
        self.key_metric, self.key_unit = (("Avg", "accuracy points") if name == "scienceqa"
                                          else ("mme_acc", "MME accuracy points"))
        self.test_text = f"{name} test questions"
        # paired intervals: ScienceQA accuracy in points; MME accuracy and accuracy+ over images (points)
        self.interval_metrics = ({m: (SCIENCEQA_METRICS[m], 100) for m in ("Avg", "IMG")} if name == "scienceqa"
                                 else {"mme_acc": (MME_INTERVALS["accuracy"], 100),
                                       "mme_acc_plus": (MME_INTERVALS["accuracy_plus"], 100)})
        self.compared = tuple(self.interval_metrics)

    def world(self, p):
        return p.world_train, p.world_test, p.size

    def lm_text(self, p, name):
        return "SmolLM2-135M-Instruct" if p.lm == "smol" else "a tiny LLaMA"

    def encoders(self, out, data, p, name, quiet):
        return _encoders(out, data, p, quiet, self.name)

    def datasets(self, data, p, enc, quiet):
        """The task's splits, and the preset with its text lengths fitted to them (:func:`fit_lengths`)."""
        train_ds, test_ds = _datasets(self.name, data, p)
        return train_ds, test_ds, self.fit_preset(p, enc, train_ds, test_ds, quiet)

    def fit_preset(self, p, enc, train_ds, test_ds, quiet):
        """``p`` with the text lengths it leaves open fitted to the data (:func:`fit_lengths`)."""
        if p.max_length is None or p.max_prompt_tokens is None:
            fit = fit_lengths(AutoTokenizer.from_pretrained(enc["lm"]), self.name, train_ds, test_ds)
            p = replace(p, max_length=p.max_length or fit[0], max_prompt_tokens=p.max_prompt_tokens or fit[1])
            say(quiet, f"      {p.max_length} text tokens per training sample, prompts up to {p.max_prompt_tokens} tokens")
        return p

    def recipe(self, variant, p, clip_dir, lm_dir, seed, extra=None):
        return recipe_for(variant, p, clip_dir, lm_dir, seed, extra=extra)

    # eim study (eim_harness.study): the world comes from eim_harness.worlds, the schedule from here
    @property
    def schedules(self):
        return {k: v for k, v in self.presets.items() if v.lm != "smol"}

    def study_encoders(self, cache, data, w, preset, p, quiet):
        """A study's encoders (the tiny LLaMA, drilled as the preset says) in a folder of the task's own."""
        return llama_encoders(data, cache / f"encoders-{self.name}" / w.key, p, quiet)

    def study_datasets(self, data):
        """ScienceQA: train, val and test splits. MME: the chat mixture; the MME questions on
        validation scenes (``mme_val/``) and on test scenes (``mme/``)."""
        if self.name == "mme":
            return chat_mixture(data), {"val": load_dataset(data / "mme_val", mode="eval"),
                                        "test": load_dataset(data / "mme", mode="eval")}
        train_ds = load_dataset(data / "scienceqa", split="train", mode="train")
        return train_ds, {s: load_dataset(data / "scienceqa", split=s, mode="eval") for s in ("val", "test")}

    def study_preset(self, p, enc, train_ds, splits):
        """The schedule with its text lengths fitted to the study's data (as :meth:`datasets` does)."""
        return self.fit_preset(p, enc, train_ds, splits["test"], quiet=True)

    def run_name(self, variant, seed):
        return f"{self.name}-{variant}-seed{seed}"

    def eval_kwargs(self, p):
        return dict(num_beams=p.beams, max_new_tokens=p.max_new_tokens, max_prompt_tokens=p.max_prompt_tokens,
                    batch_size=p.eval_batch_size, stop_text="")

    def metric_values(self, scores):
        return metric_values(self.name, scores)

    def extra_summary(self, scores_per_seed):
        if self.name == "scienceqa":
            return {"extra": {"n": scores_per_seed[0].get("n"), "unparsed": [s.get("unparsed") for s in scores_per_seed]}}
        return {"extra": {"other": [sum(st.get("other", 0) for st in s.get("subtasks", {}).values())
                                    for s in scores_per_seed]}}

    def data_summary(self, train_ds, test_ds):
        d = {"train_samples": len(train_ds), "test_samples": len(test_ds)}
        if self.name == "scienceqa":
            d["test_text_only"] = sum(1 for s in test_ds if s.image is None)
            d["test_with_image"] = len(test_ds) - d["test_text_only"]
        else:
            d["test_images"] = len(test_ds) // 2
        d["train_text_only"] = sum(1 for s in train_ds if s.image is None)
        return d

    def report(self, out, summary, results, test_ds):
        write_lavin_report(out, summary, results, test_ds)


SCIENCEQA, MME = LaVINTask("scienceqa"), LaVINTask("mme")
