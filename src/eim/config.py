"""Typed recipe configuration: dataclasses are the source of truth, YAML recipes fill them
(:mod:`eim.recipe` loads them and applies command-line overrides). Unknown keys, wrong types and
impossible combinations raise :class:`eim.errors.ConfigError` naming the key and the allowed values.

Stages are data (docs/design.md §3): each names its losses with weights, the segments it trains, its
length and learning rate. The baseline is one ``base`` stage; ``clipcap_eim`` is
``st`` → ``lm`` → ``base + ie``; adapter models with EIM (``llama_adapter_eim``, ``lavin_eim``)
are ``st`` → ``lm`` → ``adapter`` (``base`` only) → ``base + ie``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from eim.errors import ConfigError
from eim.typed import build as _build, coerce, field_default, json_value

VISION_FEATURES = ("pooled", "full", "cls", "full_projected")
VISION_TRAINABLE = ("frozen", "prompt", "lora", "full", "lavin")
PROJECTOR_TYPES = ("clipcap_mlp", "clipcap_transformer", "token_ffn", "lavin_mlp", "mlp2x_gelu", "prompt_mlp")
PROJECTOR_POOL = ("mean", "concat")
LM_TRAINABLE = ("frozen", "full", "lora", "adapter_prompt", "lavin")
ADAPTER_TYPES = ("router", "repadapter")  # LaVIN: mixture-of-modality router adapter | plain RepAdapter
PROJECTOR_INJECT = ("splice", "adapter_prompt")
LOSS_NAMES = ("base", "st", "lm", "ie")  # the losses a stage may name (their classes: eim.losses.LOSSES)
SEGMENTS = ("vision", "projector", "lm")
TEMPLATES = ("raw", "plain", "vicuna_v1", "llama_2", "chatml", "tokenizer")  # eim.model.template
IMAGE_ASPECT_RATIOS = ("crop", "pad")
GROUP_BY = ("modality_length",)
DTYPES = ("float32", "bfloat16", "float16")
MIXED_PRECISION_OF = {"bfloat16": "bf16", "float16": "fp16"}  # 16-bit weights -> the train.mixed_precision they need
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
MAIN = "main"  # the dataset of the stages that name none (a plain `--data PATH`)
DATA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")  # a dataset's name (`--data NAME=PATH`, stages.<k>.data)


@dataclass
class RepAdapterConfig:
    """LaVIN's RepAdapter (``vision.trainable: lavin`` / ``lm.trainable: lavin``; docs/design.md §4),
    the same settings for both segments: ``vision.lavin.dim``, ``lm.lavin.type``, ..."""

    type: str = "router"  # router: LaVIN's mixture-of-modality adapter (--visual_adapter_type router) | repadapter
    dim: int = 8  # hidden width (LaVIN --adapter_dim 8)
    scale: float = 1.0  # s in x + s*adapter(x) (LaVIN --adapter_scale 1)
    temperature: float = 10.0  # router softmax temperature (LaVIN --temperature 10)
    dropout: float = 0.1  # dropout after the down-projection (LaVIN: 0.1)

    def check(self, prefix: str) -> None:
        """Refuse impossible values, naming the key under ``prefix`` (``vision.lavin``, ``lm.lavin``)."""
        _choice(f"{prefix}.type", self.type, ADAPTER_TYPES)
        if self.dim < 2 or self.dim % 2:
            raise ConfigError(f"{prefix}.dim must be an even number >= 2 (the up-projection has 2 groups), "
                              f"got {self.dim}")
        if self.temperature <= 0:
            raise ConfigError(f"{prefix}.temperature must be > 0, got {self.temperature}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{prefix}.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class VisionConfig:
    name_or_path: str = "openai/clip-vit-base-patch32"  # local folder or hub id of a CLIPModel
    # pooled: ClipCap's [CLS]->visual_projection; full: [CLS]+patches, no output layer (EIM);
    # cls: [CLS] without the output layer; full_projected: every token through it (paper Table 9)
    features: str = "pooled"
    trainable: str = "frozen"  # how CLIP may be tuned: frozen | prompt (VPT) | lora (peft) | full
    prompt_length: int = 8  # VPT prompt tokens; the paper's prompt network size is not given (docs/design.md §3)
    prompt_deep: bool = False  # deep VPT: new prompts at every layer (more params, stronger)
    # gated VPT: image tokens see the prompts through a zero-initialised gate per layer, so the
    # prompted tower starts equal to the pretrained one (docs/design.md §3); False: plain VPT
    prompt_gate: bool = False
    lora_r: int = 8  # LoRA rank on q/v projections when trainable == lora
    lora_alpha: int = 16
    num_tokens: Optional[int] = None  # keep only the first K visual tokens (LaVIN/EIM use 50); None = all
    # LaVIN (with features full): [CLS] of every k-th block, no post_layernorm (4 -> 6 tokens on ViT-L/14)
    cls_every: Optional[int] = None
    # features full: None = post_layernorm of the last block (EIM); an index k = the raw hidden state
    # hidden_states[k] as transformers numbers them (0: embeddings, i: block i, -2: LLaVA's second to last)
    feature_layer: Optional[int] = None
    keep_cls: bool = True  # features full: the [CLS] token joins the patches (False: patches only, LLaVA's "default")
    # vision.trainable == lavin: a RepAdapter before the attention of every CLIP block (eim.model.adapters)
    lavin: RepAdapterConfig = field(default_factory=RepAdapterConfig)
    # the weights' dtype: float32 | bfloat16 | float16; what a stage trains is kept in float32
    # (docs/design.md §9), the rest in this dtype
    dtype: str = "float32"

    def __post_init__(self):
        _choice("vision.features", self.features, VISION_FEATURES)
        _choice("vision.trainable", self.trainable, VISION_TRAINABLE)
        _choice("vision.dtype", self.dtype, DTYPES)
        if self.trainable == "prompt" and self.prompt_length < 1:
            raise ConfigError("vision.prompt_length must be >= 1 when vision.trainable is 'prompt'")
        if self.cls_every is not None:
            if self.features != "full":
                raise ConfigError("vision.cls_every (LaVIN's per-block [CLS] tokens) needs vision.features 'full'")
            if self.cls_every < 1:
                raise ConfigError(f"vision.cls_every must be >= 1, got {self.cls_every}")
        if (self.feature_layer is not None or not self.keep_cls) and self.features != "full":
            raise ConfigError("vision.feature_layer and vision.keep_cls choose among the full token features: "
                              f"they need vision.features 'full' (got {self.features!r})")
        if self.feature_layer is not None and self.cls_every is not None:
            raise ConfigError("vision.feature_layer and vision.cls_every are two different feature choices: set one")
        self.lavin.check("vision.lavin")


@dataclass
class ProjectorConfig:
    # clipcap_mlp | clipcap_transformer | token_ffn | lavin_mlp | mlp2x_gelu (LLaVA-1.5)
    # | prompt_mlp (LLaMA-Adapter v1: one image token)
    type: str = "clipcap_mlp"
    prefix_length: int = 10  # tokens the ST emits for one pooled vector (ClipCap: 10)
    # None: clipcap_mlp prefix_length*width/2, token_ffn 4*in, lavin_mlp and prompt_mlp 128,
    # mlp2x_gelu the LLM width
    hidden_dim: Optional[int] = None
    num_layers: int = 8  # clipcap_transformer depth (ClipCap: 8)
    num_heads: int = 8  # clipcap_transformer heads (ClipCap: 8)
    clip_length: int = 10  # clipcap_transformer: tokens the pooled CLIP vector is mapped to
    # splice: ST tokens enter the LLM input after the lead token; adapter_prompt: LLaMA-Adapter's
    # multimodal variant, ST output [B, lm.adapter_len, D] is added to the adaption prompts instead
    inject: str = "splice"
    # prompt_mlp with several visual tokens: mean (MLP per token, outputs averaged: EIM's full tokens)
    # | concat (joined along channels first: LLaMA-Adapter's multi-scale global features)
    pool: str = "mean"

    def __post_init__(self):
        _choice("projector.type", self.type, PROJECTOR_TYPES)
        _choice("projector.pool", self.pool, PROJECTOR_POOL)
        _choice("projector.inject", self.inject, PROJECTOR_INJECT)


@dataclass
class LMConfig:
    name_or_path: str = "gpt2"  # local folder or hub id of any AutoModelForCausalLM
    trainable: str = "full"  # frozen | full | lora | adapter_prompt (LLaMA-Adapter v1) | lavin (LaVIN MMA)
    gguf_file: Optional[str] = None  # load weights from this GGUF file inside name_or_path
    lora_r: int = 8
    lora_alpha: int = 16
    lora_target: list[str] = field(default_factory=lambda: ["q_proj", "v_proj", "c_attn"])  # module names
    trust_remote_code: bool = False  # never run hub code unless the user asks
    # lm.trainable == adapter_prompt (LLaMA-Adapter v1, LLaMA-family LLMs only)
    adapter_len: int = 10  # prompt vectors per adapted layer (LLaMA-Adapter: 10)
    adapter_layer: int = 30  # adapted top layers (LLaMA-Adapter: 30 of LLaMA-7B's 32)
    # lm.trainable == lavin: a RepAdapter before the attention of every block + a modality token
    lavin: RepAdapterConfig = field(default_factory=RepAdapterConfig)
    # the weights' dtype: float32 | bfloat16 | float16; what a stage trains is kept in float32
    # (docs/design.md §9), the rest in this dtype (the frozen LLM of the banks too)
    dtype: str = "float32"
    # transformers' attention: eager | sdpa | flash_attention_2 (needs the flash_attn package and a
    # CUDA device); None: transformers' default for the model (sdpa where it has it)
    attn_implementation: Optional[str] = None

    def __post_init__(self):
        _choice("lm.trainable", self.trainable, LM_TRAINABLE)
        _choice("lm.dtype", self.dtype, DTYPES)
        if self.attn_implementation is not None:
            _choice("lm.attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        if self.adapter_len < 1 or self.adapter_layer < 1:
            raise ConfigError("lm.adapter_len and lm.adapter_layer must be >= 1")
        self.lavin.check("lm.lavin")


@dataclass
class StageConfig:
    name: str = "base"  # used in RUN_DIR/stage-<k>-<name>/
    losses: dict[str, float] = field(default_factory=lambda: {"base": 1.0})  # loss name -> weight
    trainable: list[str] = field(default_factory=lambda: ["projector", "lm"])  # segments trained here
    epochs: Optional[float] = None  # length in passes over the data (exclusive with steps)
    steps: Optional[int] = None  # length in optimiser steps
    lr: Optional[float] = None  # None: train.lr x lr_scale
    lr_scale: float = 1.0  # this stage's rate relative to train.lr (e.g. 0.03 for EIM's loss_LM stage)
    # the dataset this stage trains on, by name (`eim train --data NAME=PATH`; LLaVA: captions for the
    # projector stage, instructions for tuning); None: the run's main dataset (plain --data PATH)
    data: Optional[str] = None
    # the conversation template of this stage's text (eim.model.template); None: data.template
    template: Optional[str] = None
    # this stage's per-process micro-batch and accumulation (LLaVA-1.5: 32 in stage 1, 16 in stage 2
    # per device); None: train.batch_size / train.grad_accum
    batch_size: Optional[int] = None
    grad_accum: Optional[int] = None

    def __post_init__(self):
        for name, w in self.losses.items():
            _choice(f"stages[{self.name}].losses", name, LOSS_NAMES)
            try:  # 1e-1 in YAML 1.1 is a string: a weight takes every spelling of a number
                self.losses[name] = coerce(float, w, name)
            except ConfigError:
                pass
            if not isinstance(self.losses[name], float) or self.losses[name] < 0:
                raise ConfigError(f"stages[{self.name}].losses.{name}: weight must be a number >= 0, got {w!r}")
        if not self.losses:
            raise ConfigError(f"stages[{self.name}].losses: at least one of {LOSS_NAMES} is required")
        for seg in self.trainable:
            _choice(f"stages[{self.name}].trainable", seg, SEGMENTS)
        if (self.epochs is None) == (self.steps is None):
            raise ConfigError(f"stages[{self.name}]: give exactly one of 'epochs' or 'steps'")
        if self.template is not None:
            _choice(f"stages[{self.name}].template", self.template, TEMPLATES)
        for k in ("batch_size", "grad_accum"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                raise ConfigError(f"stages[{self.name}].{k} must be >= 1, got {getattr(self, k)}")
        if self.data is not None and not DATA_NAME.match(str(self.data)):
            raise ConfigError(f"stages[{self.name}].data: {self.data!r} is not a dataset name (letters, digits, "
                              "'_' or '-', starting with a letter; given as --data NAME=PATH)")


@dataclass
class TrainConfig:
    batch_size: int = 40  # ClipCap/paper: 40
    grad_accum: int = 1  # micro-batches per optimiser step
    lr: float = 2e-5  # paper, ClipCap: 2e-5 (AdamW)
    weight_decay: float = 0.0
    warmup_steps: int = 5000  # paper, ClipCap: 5000 (capped at 10% of a stage's steps)
    scheduler: str = "linear"  # any transformers get_scheduler name
    max_length: int = 64  # per sample: text tokens under `raw`; the LLM's positions, image included, else (§5)
    seed: int = 0
    mixed_precision: str = "auto"  # auto: bf16 on CUDA that supports it, else no | no | fp16 | bf16
    log_every: int = 10
    save_every: int = 500  # optimiser steps between checkpoints (and at the end of each stage)
    num_workers: str = "auto"  # data-loader workers: auto = 0 without CUDA, up to 4 per process on CUDA
    cache_clip_features: bool = True  # precompute frozen-CLIP features once (ClipCap does)
    group_by: Optional[str] = None  # modality_length: LLaVA's sampler; None: the epoch's random order
    gradient_checkpointing: bool = False  # recompute the LLM's and CLIP's blocks in backward (§9)
    max_grad_norm: Optional[float] = None  # clip the gradients' global norm (LLaVA-1.5: 1.0); None: no clipping
    # trackers through accelerate (tensorboard, wandb, mlflow, ...), one run named run_name (default:
    # the run folder's); validation every eval_every steps on eval_samples held-out samples (§9)
    report_to: list[str] = field(default_factory=list)
    run_name: Optional[str] = None
    eval_every: Optional[int] = None
    eval_samples: int = 256
    eval_banks: bool = False
    eval_generate: bool = False

    def __post_init__(self):
        _choice("train.mixed_precision", self.mixed_precision, ("auto", "no", "fp16", "bf16"))
        if self.num_workers != "auto" and not str(self.num_workers).isdigit():
            raise ConfigError(f"train.num_workers: {self.num_workers!r} is not allowed (allowed: auto or a whole number >= 0)")
        if self.eval_every is not None and self.eval_every < 1:
            raise ConfigError(f"train.eval_every must be >= 1 (or none), got {self.eval_every}")
        if self.eval_samples < 1:
            raise ConfigError(f"train.eval_samples must be >= 1, got {self.eval_samples}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"train.max_grad_norm must be > 0 (or none), got {self.max_grad_norm}")
        if self.group_by is not None:
            _choice("train.group_by", self.group_by, GROUP_BY)
        for k in ("batch_size", "grad_accum", "max_length", "save_every", "log_every"):
            if getattr(self, k) < 1:
                raise ConfigError(f"train.{k} must be >= 1, got {getattr(self, k)}")


@dataclass
class DataConfig:
    """How samples become the model's input (docs/design.md §5)."""

    # the conversation template of every stage that names none (stages.<k>.template): raw is the
    # bare layout of ClipCap, LaVIN and LLaMA-Adapter; LLaVA-1.5 trains plain, then vicuna_v1
    template: str = "raw"
    # crop: the CLIP processor's resize and centre crop; pad: first pad to a square in the
    # processor's mean colour (LLaVA-1.5's image_aspect_ratio pad)
    image_aspect_ratio: str = "crop"
    # the system line of the templates that have one (vicuna_v1, llama_2, chatml, tokenizer); None: the
    # template's own (LLaVA's); a sample's own system message wins
    system: Optional[str] = None

    def __post_init__(self):
        _choice("data.template", self.template, TEMPLATES)
        _choice("data.image_aspect_ratio", self.image_aspect_ratio, IMAGE_ASPECT_RATIOS)


@dataclass
class EIMConfig:
    tau: float = 0.07  # InfoNCE temperature (paper, after MoCo/InstDisc)
    ie_head: str = "clip_projection"  # clip_projection: CLIP's own projections | linear: learn a head
    lm_query_input: str = "text"  # text: tuned LLM reads the bank's text | multimodal: [ST(image); text]
    same_image: str = "negative"  # negative: other captions of the image are negatives (paper) | mask
    bank_dtype: str = "float16"  # storage dtype of feature banks
    bank_batch_size: int = 64  # rows per forward when building banks
    chunk_size: int = 65536  # bank rows per chunk of the log-sum-exp
    shard_banks: bool = False  # split banks by rows across processes (exact sharded InfoNCE); for banks larger than one device

    def __post_init__(self):
        _choice("eim.ie_head", self.ie_head, ("clip_projection", "linear"))
        _choice("eim.lm_query_input", self.lm_query_input, ("text", "multimodal"))
        _choice("eim.same_image", self.same_image, ("negative", "mask"))
        _choice("eim.bank_dtype", self.bank_dtype, ("float16", "bfloat16", "float32"))


@dataclass
class GenerationConfig:
    num_beams: int = 5  # ClipCap: beam 5 (1 = greedy)
    max_new_tokens: int = 67  # ClipCap: 67
    stop_text: Optional[str] = "."  # cut the text after this (ClipCap stops at '.'); None: EOS only
    batch_size: int = 16


@dataclass
class Recipe:
    name: str = "custom"
    vision: VisionConfig = field(default_factory=VisionConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eim: EIMConfig = field(default_factory=EIMConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])

    def __post_init__(self):
        self.stages = [s if isinstance(s, StageConfig) else _build(StageConfig, s, "stages") for s in self.stages]
        if not self.stages:
            raise ConfigError("stages: a recipe needs at least one stage")
        if self.projector.type == "clipcap_mlp" and self.vision.features not in ("pooled", "cls"):
            raise ConfigError(
                "projector.type 'clipcap_mlp' maps one pooled vector to a prefix: it needs "
                "vision.features 'pooled' or 'cls' (allowed with 'full': token_ffn, clipcap_transformer, lavin_mlp, mlp2x_gelu)"
            )
        p = self.projector
        if p.inject == "adapter_prompt":
            if self.lm.trainable != "adapter_prompt":
                raise ConfigError("projector.inject 'adapter_prompt' adds the ST output to LLaMA-Adapter's "
                                  f"prompts: it needs lm.trainable 'adapter_prompt' (got {self.lm.trainable!r})")
            if p.type not in ("prompt_mlp", "clipcap_mlp", "clipcap_transformer"):
                raise ConfigError("projector.inject 'adapter_prompt' needs an ST with a fixed number of output "
                                  f"tokens (allowed: prompt_mlp, clipcap_mlp, clipcap_transformer), got {p.type!r}")
            if p.type != "prompt_mlp" and p.prefix_length != self.lm.adapter_len:  # prompt_mlp: 1, repeated
                raise ConfigError(f"projector.prefix_length ({p.prefix_length}) must equal lm.adapter_len "
                                  f"({self.lm.adapter_len}) when projector.inject is 'adapter_prompt'")
        low = {d for d in (self.vision.dtype, self.lm.dtype) if d != "float32"}
        if len(low) > 1:
            raise ConfigError(f"vision.dtype {self.vision.dtype} and lm.dtype {self.lm.dtype}: one run computes in one "
                              "16-bit precision; give both the same, or one float32")
        if low and self.train.mixed_precision not in ("auto", want := MIXED_PRECISION_OF[next(iter(low))]):
            raise ConfigError(f"{'/'.join(sorted(low))} weights compute under autocast: set train.mixed_precision auto "
                              f"or {want} (got {self.train.mixed_precision!r})")
        for s in self.stages:
            if "vision" in s.trainable and self.vision.trainable == "frozen":
                raise ConfigError(
                    f"stages[{s.name}] trains 'vision' but vision.trainable is 'frozen' "
                    f"(allowed: {', '.join(VISION_TRAINABLE[1:])})"
                )
            if "lm" in s.trainable and self.lm.trainable == "frozen":
                raise ConfigError(
                    f"stages[{s.name}] trains 'lm' but lm.trainable is 'frozen' "
                    f"(allowed: {', '.join(LM_TRAINABLE[1:])})"
                )
            if "ie" in s.losses and "vision" not in s.trainable:
                raise ConfigError(f"stages[{s.name}]: loss 'ie' trains CLIP, so 'vision' must be in trainable")
            if "st" in s.losses and "projector" not in s.trainable:
                raise ConfigError(f"stages[{s.name}]: loss 'st' trains the ST, so 'projector' must be in trainable")
            if "lm" in s.losses and "lm" not in s.trainable:
                raise ConfigError(f"stages[{s.name}]: loss 'lm' trains the LLM, so 'lm' must be in trainable")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stage_template(self, stage: Optional[StageConfig] = None) -> str:
        """The conversation template of ``stage`` (default: the last stage's, what a trained run is
        served with: ``eim chat``, ``eim eval``, ``eim export``)."""
        stage = self.stages[-1] if stage is None else stage
        return stage.template or self.data.template

    def stage_batch(self, stage: StageConfig) -> tuple[int, int]:
        """(per-process micro-batch, accumulation steps) of ``stage``: its own, else ``train``'s."""
        return stage.batch_size or self.train.batch_size, stage.grad_accum or self.train.grad_accum

    def stage_lr(self, stage: StageConfig) -> float:
        """The stage's own ``lr`` when set, else ``train.lr × lr_scale`` (docs/design.md §3)."""
        return self.train.lr * stage.lr_scale if stage.lr is None else stage.lr


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not allowed (allowed: {', '.join(map(str, allowed))})")


def build_recipe(data: dict[str, Any]) -> Recipe:
    """A :class:`Recipe` from a plain dict (a YAML file's, ``recipe.json``), keys and types checked."""
    return _build(Recipe, data, "recipe")


def recipe_delta(recipe: Recipe) -> dict[str, Any]:
    """The recipe's fields that differ from their defaults, as nested plain values (every stage is
    listed, each by the fields that differ from :class:`StageConfig`'s). What identifies a run and a
    study's run folder (docs/design.md §8): a field added later with a default leaves it unchanged,
    so existing runs and caches stay valid."""
    def diff(obj):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                sub = diff(value)
                if sub:
                    out[f.name] = sub
            elif f.name != "stages" and value != field_default(f):
                out[f.name] = json_value(value)
        return out

    return {**diff(recipe), "stages": [diff(s) for s in recipe.stages]}
