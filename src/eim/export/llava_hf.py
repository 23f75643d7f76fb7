"""``llava-hf``: a run as a folder ``transformers.LlavaForConditionalGeneration`` serves (docs/design.md §12).

    eim export runs/llava --format llava-hf --out llava-exported

    from transformers import AutoProcessor, LlavaForConditionalGeneration
    model = LlavaForConditionalGeneration.from_pretrained("llava-exported")
    processor = AutoProcessor.from_pretrained("llava-exported")

The folder holds ``config.json`` (``LlavaConfig``: the CLIP vision config, the LLM's config, the
feature layer and selection), ``model.safetensors``, ``generation_config.json`` (greedy, eim's
EOS and pad), the tokenizer with an ``<image>`` token, the image processor (``LlavaImageProcessor``
with ``do_pad`` when the run pads its images to squares) and, in the processor and the tokenizer, a
chat template that renders the run's conversation template (:mod:`eim.export.chat_templates`), so
nothing of eim is needed to load or serve it.

What has to agree for the same answers, and how each is kept:

- **the layout.** The run's last stage's conversation template (``vicuna_v1`` for ``llava``: the
  system line, ``USER: <image>\\nQ ASSISTANT: A</s>``...; ``raw``: ``[lead][image x P][q1] [a1]
  [EOS][q2]``...) written as Jinja; LLaVA puts its features wherever ``<image>`` stands, where the
  template puts it (the start of the first user turn), and the processor expands it to P.
- **the features.** LLaVA reads ``hidden_states[vision_feature_layer]`` of ``CLIPVisionModel``,
  ``[CLS]`` dropped (``default``) or kept (``full``): eim's ``vision.feature_layer`` and
  ``keep_cls`` mean exactly that. eim's own default (``post_layernorm`` of the last block) has no
  place in LLaVA, so such a run is refused.
- **the weights.** The tuned CLIP (LoRA merged into its weights by peft), the ``mlp2x_gelu`` ST
  (LLaVA's ``linear_1 / GELU / linear_2``), the LLM's backbone and head. The ``<image>`` token is
  a new row of the embeddings and the head; its logit is suppressed (``suppress_tokens``), so
  every other logit, hence greedy decoding, is unchanged.
- **what plain LLaVA lacks.** VPT prompts and LaVIN / LLaMA-Adapter adapters act inside the
  forward pass: not mergeable exactly, so the export refuses such a run and says why.

Before anything is written the export checks itself: the processor's token ids against eim's
prompt for probe conversations, its pixels against eim's image processor, and the LLaVA model's
logits against eim's on a probe image.
"""

import copy

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from PIL import Image
from transformers import GenerationConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from eim.data.images import image_pixel_values
from eim.data.sample import Sample
from eim.errors import EIMError
from eim.export.chat_templates import chat_template
from eim.model.splice import TextEncoder

try:  # transformers 5: the PIL backend by name (it needs no torchvision)
    from transformers import LlavaImageProcessorPil as LlavaImageProcessor
except ImportError:  # transformers 4
    from transformers import LlavaImageProcessor

IMAGE_TOKEN = "<image>"
ATOL = 1e-4  # logits of the exported model vs eim's on the probe (float32: ~1e-6 is typical)


class ExportError(EIMError):
    """A run cannot be written in the asked format, or the written model would not match it."""


def check_exportable(recipe):
    """Raise :class:`ExportError` naming every part of ``recipe`` a plain LLaVA cannot hold."""
    v, p, lm = recipe.vision, recipe.projector, recipe.lm
    why = []
    if v.features != "full" or v.feature_layer is None:
        why.append("LLaVA feeds its projector a raw CLIP hidden state: set vision.features full and "
                   f"vision.feature_layer (LLaVA: -2); this run has features {v.features!r}, feature_layer "
                   f"{v.feature_layer!r} (EIM's post_layernorm features have no place in LLaVA)")
    if v.cls_every is not None or v.num_tokens is not None:
        why.append("LLaVA takes every patch token of one layer: vision.cls_every and vision.num_tokens must be unset")
    if v.trainable == "prompt":
        why.append("the run's VPT prompts (vision.trainable prompt) run inside CLIP at inference and cannot be "
                   "merged into its weights; train with --vision.trainable lora (merged exactly on export) or full")
    if v.trainable == "lavin" or lm.trainable in ("lavin", "adapter_prompt"):
        why.append(f"LaVIN / LLaMA-Adapter adapters (vision.trainable {v.trainable!r}, lm.trainable "
                   f"{lm.trainable!r}) are not part of a plain LLaVA and do not merge into its weights")
    if p.type != "mlp2x_gelu" or p.inject != "splice":
        why.append(f"LLaVA's projector is mlp2x_gelu spliced into the input (this run: projector.type {p.type!r}, "
                   f"inject {p.inject!r})")
    if why:
        raise ExportError(f"recipe {recipe.name} cannot be exported as llava-hf: " + "; ".join(why))


def check_lm(lm):
    """LLaVA's language model is a LLaMA-family backbone (``embed_tokens``, which its head ties to)."""
    if not hasattr(lm.base_model, "embed_tokens"):
        raise ExportError(f"llava-hf holds a LLaMA-family LLM (a backbone with embed_tokens: LLaMA, Vicuna, "
                          f"Mistral, Qwen2, SmolLM2); this run's LLM is {lm.config.model_type!r}")


def merged_state(module):
    """``module``'s state dict with peft's LoRA layers merged into their base weights (peft's own
    ``merge``) and named as the plain module names them."""
    for m in module.modules():
        if isinstance(m, BaseTunerLayer) and not m.merged:
            m.merge()
    return {k.replace(".base_layer.", "."): t for k, t in module.state_dict().items() if "lora_" not in k}


def build_llava(model, tok, recipe):
    """-> (LlavaForConditionalGeneration, exported tokenizer, image token id, whether a row was added)."""
    v, lm = model.vision, model.lm
    tok2 = copy.deepcopy(tok)
    tok2.add_tokens([IMAGE_TOKEN], special_tokens=True)
    image_id = tok2.convert_tokens_to_ids(IMAGE_TOKEN)
    vocab = lm.get_input_embeddings().num_embeddings
    added = image_id >= vocab  # a new row (else the token takes an unused row of a padded vocabulary)
    text_config = copy.deepcopy(lm.config)
    text_config.vocab_size = max(vocab, image_id + 1)
    parts = [v.vision_model.config.to_dict(), text_config.to_dict()]
    for d in parts:  # built in float32 (a 16-bit recipe's dtype would build 16-bit parts); written in --dtype
        d.pop("dtype", None), d.pop("torch_dtype", None)
    config = LlavaConfig(vision_config=parts[0], text_config=parts[1],
                         image_token_index=image_id, image_seq_length=v.num_tokens, projector_hidden_act="gelu",
                         vision_feature_select_strategy="full" if recipe.vision.keep_cls else "default",
                         vision_feature_layer=recipe.vision.feature_layer, multimodal_projector_bias=True,
                         tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)))
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        tower = llava.model.vision_tower  # transformers 4 wraps the tower's modules in .vision_model
        _load(getattr(tower, "vision_model", tower), merged_state(v.vision_model), "CLIP vision tower")
        _load(llava.model.multi_modal_projector, model.projector.state_dict(), "projector")
        backbone = merged_state(lm.base_model)
        emb = lm.get_input_embeddings().weight
        key = next(n for n, p in lm.base_model.named_parameters() if p is emb)
        backbone[key] = _rows(emb, text_config.vocab_size)
        _load(llava.model.language_model, backbone, "LLM")
        llava.lm_head.weight.copy_(_rows(lm.get_output_embeddings().weight, text_config.vocab_size))
    if config.tie_word_embeddings:
        llava.tie_weights()
    return llava, tok2, image_id, added


def _rows(weight, n):
    """``weight`` [V, D] with zero rows appended up to ``n``."""
    out = weight.new_zeros(n, weight.shape[1])
    out[: weight.shape[0]] = weight
    return out


def _load(module, state, what):
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ExportError(f"the {what} does not map onto LLaVA's: missing {missing[:5]}, unexpected {unexpected[:5]}")


def build_processor(tok2, proc, model, recipe):
    """LLaVA's processor: eim's image processor (as ``LlavaImageProcessor`` with ``do_pad`` when the run
    pads its images to squares), the tokenizer with ``<image>``, and the run's conversation template
    as the chat template of both (vLLM reads the tokenizer's, lmms-eval the processor's)."""
    name = recipe.stage_template()
    template = chat_template(name, bool(TextEncoder(tok2).lead), getattr(tok2, "chat_template", None) or "",
                             system=recipe.data.system)
    tok2.chat_template = template
    if recipe.data.image_aspect_ratio == "pad":
        keys = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                "do_normalize", "image_mean", "image_std", "do_convert_rgb")
        settings = proc.to_dict()
        proc = LlavaImageProcessor(**{k: settings[k] for k in keys if k in settings}, do_pad=True)
    c = model.vision.vision_model.config
    return LlavaProcessor(image_processor=proc, tokenizer=tok2, patch_size=c.patch_size,
                          vision_feature_select_strategy="full" if recipe.vision.keep_cls else "default",
                          chat_template=template, image_token=IMAGE_TOKEN, num_additional_image_tokens=1)


def generation_config(model, tok, recipe, image_id, added):
    """Greedy decoding as ``eim chat`` / ``eim eval`` run it (the LLM's own generation config
    underneath, as eim's ``generate`` has it), the added ``<image>`` row suppressed."""
    g = copy.deepcopy(model.lm.generation_config)
    g.update(do_sample=False, num_beams=1, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
             max_new_tokens=recipe.generation.max_new_tokens, suppress_tokens=[image_id] if added else None)
    if tok.bos_token_id is not None:
        g.bos_token_id = tok.bos_token_id
    for k in ("temperature", "top_p", "top_k"):  # sampling settings mean nothing to greedy decoding
        if hasattr(g, k):
            setattr(g, k, GenerationConfig().__dict__.get(k))
    return g


PROBES = [  # (system, earlier turns, question, answer or None): their token ids must match eim's exactly
    (None, [], "What is in the image?", None),
    (None, [("Describe the image.", "A red circle on white.")], "  Is there a red circle? Please answer yes or no.", None),
    (None, [("Describe the image.", "A red circle on white.")], "Is it big?", "No, it is small."),
    ("You answer in one word.", [], "What colour is it?", "Red."),
]


def _messages(system, turns, question, answer):
    """The probe as the messages LLaVA's processor takes: the image a part of the first user turn."""
    msgs = [{"role": "system", "content": system}] if system else []
    for i, (q, a) in enumerate(turns + [(question, answer)]):
        msgs.append({"role": "user", "content": ([{"type": "image"}] if i == 0 else []) + [{"type": "text", "text": q}]})
        if a is not None:
            msgs.append({"role": "assistant", "content": a})
    return msgs


def _probe(enc, system, turns, question, answer):
    """(eim's token ids, image position) of a probe: a whole conversation, or a prompt when the
    last answer is None; the image in the first turn."""
    conv = [(q, a) for q, a in turns] + [(question.strip(), answer or "")]
    sample = Sample(0, "probe.png", conv[0][0], conv[0][1], turns=conv if len(conv) > 1 else None, system=system)
    if answer is None:
        return enc.encode_prompt_sample(sample)
    ids, _, at = enc.encode_sample(sample)
    return ids, at


def verify(model, tok, proc, recipe, llava, processor, image_id):
    """The exported model against eim's on probes: token ids (prompts and whole conversations, in the
    run's conversation template), pixels and logits. Raises ExportError."""
    template = recipe.stage_template()
    P = model.vision.num_tokens
    enc = TextEncoder.for_recipe(tok, recipe, max_length=10 ** 6, image_positions=P)
    image = Image.new("RGB", (37, 29), (200, 60, 30))

    def processed(probe):
        return processor.apply_chat_template(_messages(*probe), add_generation_prompt=probe[3] is None, tokenize=True,
                                             return_dict=True, return_tensors="pt", processor_kwargs={"images": [image]})

    for probe in (p for p in PROBES if template != "plain" or not p[1]):  # plain renders one turn
        ids, k = _probe(enc, *probe)
        got = processed(probe)["input_ids"][0].tolist()
        if got != ids[:k] + [image_id] * P + ids[k:]:
            raise ExportError(f"the exported chat template ({template}) gives other token ids than eim for the probe "
                              f"{probe[2].strip()!r}: {got[:12]}... vs {ids[:12]}... (the tokenizer splits text after "
                              "a special token differently); nothing was written")
    inputs = processed(PROBES[0])
    pix = image_pixel_values(proc, [image], recipe.data.image_aspect_ratio)  # what eim's collator feeds
    if not torch.equal(inputs["pixel_values"], pix):
        raise ExportError("the exported image processor does not reproduce eim's pixels; nothing was written")
    ids, k = _probe(enc, *PROBES[0])
    batch = {"input_ids": torch.tensor([ids]), "text_lengths": torch.tensor([len(ids)]), "n_lead": torch.tensor([k]),
             "pixel_values": pix, "has_image": torch.tensor([True])}
    with torch.no_grad():
        embeds, mask, pos, _ = model.embed(batch, with_labels=False)
        ours = model.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits[0]
        theirs = llava(**inputs).logits[0, :, : ours.shape[-1]]
    err = (ours - theirs).abs().max().item()
    if err > ATOL:
        raise ExportError(f"the exported model's logits differ from eim's by {err:.2e} (> {ATOL}) on a probe image; "
                          "nothing was written")
    return err


def export_llava_hf(model, tok, proc, recipe, out, dtype="float32"):
    """Write ``model`` (loaded by :func:`eim.api.load_for_inference`) into the folder ``out`` (it
    must be new or empty: the caller moves it into place). Returns a summary dict. The export is built
    and checked in float32 (a 16-bit recipe's model is cast: its trained parts are float32 and the
    check compares logits to a float32 tolerance; host memory ~4 bytes per parameter), then written
    in ``dtype``."""
    check_exportable(recipe)
    check_lm(model.lm)
    model.float()
    llava, tok2, image_id, added = build_llava(model, tok, recipe)
    processor = build_processor(tok2, proc, model, recipe)
    err = verify(model, tok, proc, recipe, llava, processor, image_id)
    llava.generation_config = generation_config(model, tok, recipe, image_id, added)
    llava.to(getattr(torch, dtype))
    for part in (llava.config.text_config, llava.config.vision_config):  # every part says what it holds
        part.dtype = getattr(torch, dtype)
    llava.save_pretrained(out)
    processor.save_pretrained(out)
    return {"format": "llava-hf", "recipe": recipe.name, "image_token": IMAGE_TOKEN, "image_token_id": image_id,
            "image_tokens": model.vision.num_tokens, "vision_feature_layer": recipe.vision.feature_layer,
            "vision_feature_select_strategy": llava.config.vision_feature_select_strategy,
            "lead": tok.convert_ids_to_tokens(TextEncoder(tok).lead), "dtype": dtype,
            "probe_max_logit_diff": err, "stop_text": recipe.generation.stop_text}
