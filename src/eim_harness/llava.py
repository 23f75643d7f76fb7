"""``eim demo --task llava``: LLaVA-1.5 vs LLaVA + EIM on the embedded data, end to end (docs/harness.md).

    eim demo --task llava                  # tiny preset: small CLIP + a tiny pretrained LLaMA
    eim study llava-eim --out studies/llava --cache studies/cache-llava   # 3 seeds, intervals

``--preset test`` is a seconds-long smoke run of the same pipeline.

LLaVA's two stages are data (``stages.<k>.data``): the projector aligns on the COCO-format captions
(``coco/``, stage 1, LLaVA's ``plain`` template), then the projector and the LLM are tuned on the
generated LLaVA-format conversations (``llava/instruct.json``, stage 2, ``vicuna_v1``: one sample per
conversation, every answer a target), images padded to squares, batches grouped by modality and
length: LLaVA-1.5's data path (docs/design.md §5). ``llava_eim`` adds EIM's stages around them
(loss_ST on the captions, loss_LM on the instructions, then loss_base + loss_IE with CLIP tuned by
LoRA in the tuning stage). Both are scored twice on the test split, in ``vicuna_v1`` as they are
served: the MME-format yes/no questions (``mme/``: MME's score, and accuracy / accuracy+ with paired
intervals) and the captions (``coco/`` test images asked :data:`CAPTION_QUESTION`: COCO metrics,
BLEU-4 / CIDEr with intervals). Default output folder: ``eim-demo-llava``.

Decisions, each visible in the report:

- **LLM.** LLaVA is a LLaMA-family method: the tiny preset uses the LaVIN demo's tiny pretrained
  ``LlamaForCausalLM`` (cache ``encoders-llama/llava/``, beside ``--task scienceqa|mme``'s), fully
  tuned in stage 2 as LLaVA tunes Vicuna. The CLIP is the demo's small pretrained one, its
  features taken as LLaVA takes them (second-to-last layer, patches only).
- **Equal training on loss_base.** Both get ``pretrain_steps`` projector-alignment and
  ``finetune_steps`` tuning steps; EIM's ``loss_ST`` / ``loss_LM`` stages are extra cost.
- **Rates.** LLaVA's per-stage rates (1e-3 for the projector alone) scaled for a from-scratch tiny
  LLM: tuning at ``lr`` (the ClipCap demo's 1e-3 for a fully tuned LLM of this size); the
  ``loss_LM`` stage at the recipe's 0.03 × ``lr``. Not chosen on validation.
"""

from dataclasses import dataclass, field, replace

from eim.data import load_dataset
from eim_harness.coco import STRUCTURE_KEYS
from eim_harness.lavin import _TEST_ENCODERS, llama_encoders
from eim_harness.llava_report import write_llava_report
from eim_harness.task import Task
from eim_harness.evaluate import evaluate_benchmark
from eim.evaluation.intervals import COCO_METRICS, MME_METRICS
from eim.evaluation.mme import flat_scores
from eim.recipe import load_recipe

VARIANTS = ("llava", "llava_eim")
LABELS = {"llava": "LLaVA (baseline)", "llava_eim": "LLaVA + EIM"}
MME_SUBTASKS = ("existence", "count", "position", "color")
CAPTION_METRICS = ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
METRICS = ("perception",) + MME_SUBTASKS + ("mme_acc", "mme_acc_plus") + CAPTION_METRICS
# metric -> (the evaluation it comes from, its key in that evaluation's per-item statistics)
SOURCES = {"mme_acc": ("mme", "accuracy"), "mme_acc_plus": ("mme", "accuracy_plus"),
           **{m: ("coco", m) for m in COCO_METRICS}}


@dataclass
class LLaVAPreset:
    """Data, schedule and decoding of the LLaVA demo; every field is a knob for a quick experiment."""

    world_train: int = 2000  # shapes world (= the other demos', so a shared --out shares its data)
    world_test: int = 200  # test images (captions); MME gets test//4 images per subtask
    size: int = 64  # image side in pixels
    pretrain_steps: int = 300  # LLaVA stage 1 on loss_base (projector, captions), both variants
    finetune_steps: int = 300  # LLaVA stage 2 on loss_base (projector + LLM, instructions), both variants
    st_steps: int = 60  # EIM loss_ST (captions), extra cost
    lm_steps: int = 60  # EIM loss_LM (instructions), extra cost
    batch_size: int = 16
    pretrain_lr: float = 1e-3  # LLaVA's stage-1 rate (the projector alone)
    lr: float = 1e-3  # stage 2 (and EIM's stages, loss_LM at the recipe's 0.03 x)
    warmup: int = 20
    # positions per sample, the image's 16 included (LLaVA's model_max_length; docs/design.md §5): every generated
    # conversation fits in vicuna_v1 (its system line is 75 of the tiny tokenizer's tokens; the longest
    # conversation 204 + 16), within the tiny LLaMA's 256 positions; the bare text the banks read is shorter
    max_length: int = 220
    max_new_tokens: int = 4  # MME: "Yes" / "No"
    caption_new_tokens: int = 24  # captions, cut at the first "."
    beams: int = 1
    eval_batch_size: int = 16
    encoders: dict = field(default_factory=dict)  # overrides of eim_harness.encoders.PRESETS (sizes, steps)
    overrides: dict = field(default_factory=dict)  # extra recipe overrides for both variants


PRESETS = {
    "tiny": LLaVAPreset(),
    "test": LLaVAPreset(world_train=24, world_test=8, size=32, pretrain_steps=4, finetune_steps=4, st_steps=2,
                        lm_steps=2, batch_size=8, warmup=0, caption_new_tokens=6, eval_batch_size=8,
                        encoders=_TEST_ENCODERS),
}


def recipe_for(variant, p, clip_dir, lm_dir, seed, extra=None):
    """``llava`` / ``llava_eim`` pointed at the demo encoders with the preset's schedule; ``extra``:
    a study's overrides (stage-list changes first, the rest last)."""
    extra = dict(extra or {})
    structure = {k: extra.pop(k) for k in STRUCTURE_KEYS if k in extra}
    over = {**structure, "vision.name_or_path": str(clip_dir), "lm.name_or_path": str(lm_dir),
            "train.batch_size": p.batch_size, "train.lr": p.lr, "train.warmup_steps": p.warmup,
            "train.max_length": p.max_length, "train.seed": seed, "train.scheduler": "cosine",
            "train.save_every": 10_000, "train.log_every": 5, "generation.num_beams": p.beams,
            "generation.max_new_tokens": p.max_new_tokens,
            # the real-size recipe's memory levers off for the tiny float32 models: weights in float32, no
            # recomputation, the frozen CLIP's features cached, one batch size for every stage
            "vision.dtype": "float32", "lm.dtype": "float32", "lm.attn_implementation": None,
            "train.gradient_checkpointing": False, "train.cache_clip_features": True, "train.max_grad_norm": None}
    lengths = {"pretrain": p.pretrain_steps, "finetune": p.finetune_steps, "finetune_ie": p.finetune_steps,
               "st": p.st_steps, "lm": p.lm_steps}
    for i, stage in enumerate(load_recipe(variant, structure).stages):
        over[f"stages.{i}.epochs"] = None
        over[f"stages.{i}.steps"] = lengths.get(stage.name, p.finetune_steps)
        over[f"stages.{i}.batch_size"] = None  # the preset's batch
        if stage.lr is not None:  # the recipe's absolute rates (LLaVA's 1e-3 for the projector) -> the preset's
            over[f"stages.{i}.lr"] = p.pretrain_lr
    over.update(p.overrides)
    over.update(extra)
    return load_recipe(variant, over)


def train_datasets(data):
    return {"captions": load_dataset(data / "coco", split="train", mode="train"),
            "instruct": load_dataset(data / "llava" / "instruct.json", mode="train")}


# the caption question of the caption evaluation: one of the world's own description requests
# (eim_harness.shapes.questions.DESCRIBE), which open its instruction conversations with the caption
# as the answer. The instruction-tuned model is served in vicuna_v1, which asks a question; LLaVA's
# own caption evaluations ask one too
CAPTION_QUESTION = "Give a short caption for this image."


class Asked:
    """``dataset`` with every sample asking ``question`` (the caption evaluation's prompt); the rest,
    scorer inputs included, is the dataset's own."""

    def __init__(self, dataset, question):
        self.dataset, self.question = dataset, question

    def __getattr__(self, name):
        return getattr(self.dataset, name)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return replace(self.dataset[i], instruction=self.question)


def eval_datasets(data, split="test"):
    """MME-format questions (the world writes them from the test scenes) and the split's captions,
    asked for with :data:`CAPTION_QUESTION`."""
    out = {"coco": Asked(load_dataset(data / "coco", split=split, mode="eval"), CAPTION_QUESTION)}
    if split == "test":
        out["mme"] = load_dataset(data / "mme", mode="eval")
    return out


class _Eval:
    """One benchmark of the task (:class:`eim_harness.evaluate.Benchmark`)."""

    def __init__(self, name, kwargs, interval_metrics):
        self.name, self._kwargs, self.interval_metrics = name, kwargs, interval_metrics

    def eval_kwargs(self, p):
        return self._kwargs(p)


EVALS = {
    "mme": _Eval("mme", lambda p: dict(num_beams=p.beams, max_new_tokens=p.max_new_tokens,
                                       batch_size=p.eval_batch_size, stop_text=""), MME_METRICS),
    "coco": _Eval("coco", lambda p: dict(num_beams=p.beams, max_new_tokens=p.caption_new_tokens,
                                         batch_size=p.eval_batch_size, stop_text=".", spice=False), COCO_METRICS),
}


def merged_scores(parts):
    """One flat dict: MME's scores as its scorer gives them (points), accuracy and accuracy+ in %,
    the COCO metrics x100 (the unit the intervals are in)."""
    out = {}
    if "mme" in parts:
        out.update({s: None for s in MME_SUBTASKS})  # a subtask the results lack reads None
        out.update(flat_scores(parts["mme"]))
    if "coco" in parts:
        out.update({k: (None if parts["coco"].get(k) is None else 100 * parts["coco"][k]) for k in CAPTION_METRICS})
    return out


class LLaVATask(Task):
    """LLaVA vs LLaVA + EIM (:func:`eim_harness.pipeline.run_comparison`, :func:`eim_harness.study.run_study`)."""

    name = "llava"
    presets, schedules, variants, labels, metrics = PRESETS, PRESETS, VARIANTS, LABELS, METRICS
    baseline, treatment = "llava", "llava_eim"
    key_metric, key_unit, key_scale = "mme_acc", "MME accuracy points", 1  # scores are merged in their units
    interval_metrics = {m: (EVALS[src].interval_metrics[k], 100) for m, (src, k) in SOURCES.items()}
    metric_sources = {m: src for m, (src, _) in SOURCES.items()}  # which evaluation folder a metric reads
    compared = ("mme_acc", "mme_acc_plus", "Bleu_4", "CIDEr")
    data_text = "the shapes world (COCO captions, LLaVA conversations, MME questions)"
    test_text = "test items (MME questions + caption images)"

    def world(self, p):
        return p.world_train, p.world_test, p.size

    def lm_text(self, p, name):
        return "a tiny LLaMA"

    def encoders(self, out, data, p, name, quiet):
        return llama_encoders(data, out / "encoders-llama" / "llava", p, quiet)

    def study_encoders(self, cache, data, w, preset, p, quiet):
        """A study's encoders: the tiny LLaMA, in a folder of its own (never the ClipCap studies' GPT-2)."""
        source = data if w.pretrain == "downstream" else data / "web"
        return llama_encoders(source, cache / "encoders-llama" / w.key, p, quiet)

    def datasets(self, data, p, enc, quiet):
        return train_datasets(data), eval_datasets(data), p

    def study_datasets(self, data):
        return train_datasets(data), {"val": eval_datasets(data, "val"), "test": eval_datasets(data, "test")}

    def recipe(self, variant, p, clip_dir, lm_dir, seed, extra=None):
        return recipe_for(variant, p, clip_dir, lm_dir, seed, extra=extra)

    def run_name(self, variant, seed):
        return f"{variant}-seed{seed}"

    def evaluate(self, run_dir, datasets, p, split="test", quiet=False, meteor=True):
        """Each benchmark of ``datasets`` -> (merged scores, {benchmark: folder}, generation seconds)."""
        parts, dirs, seconds = {}, {}, 0.0
        for name, ds in datasets.items():
            kw = {"meteor": meteor} if name == "coco" else {}
            parts[name], dirs[name], s = evaluate_benchmark(EVALS[name], run_dir, ds, p, split=split, quiet=quiet, **kw)
            seconds += s or 0.0
        return merged_scores(parts), dirs, seconds

    def metric_values(self, scores):
        return {m: scores.get(m) for m in METRICS}

    def extra_summary(self, scores_per_seed):
        return {"extra": {"other": [s.get("mme_other") for s in scores_per_seed]}}

    def data_summary(self, train_ds, test_ds):
        return {"train_samples": {k: len(d) for k, d in train_ds.items()},
                "train_text_only": sum(1 for s in train_ds["instruct"] if s.image is None),
                "test_samples": {k: len(d) for k, d in test_ds.items()}}

    def report(self, out, summary, results, test_ds):
        write_llava_report(out, summary, results, test_ds)


TASK = LLaVATask()
