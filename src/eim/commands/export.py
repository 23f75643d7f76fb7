"""``eim export RUN_DIR --format llava-hf --out DIR [--dtype float32|bfloat16|float16] [--overwrite]``

Writes a trained run as a folder other tools load with no ``eim`` installed (docs/design.md §12):
``llava-hf`` is ``transformers.LlavaForConditionalGeneration`` + ``AutoProcessor`` (config,
safetensors weights, tokenizer with the ``<image>`` token, CLIP image processor, and a chat
template that renders the prompt eim trains and generates with). The export checks itself on
probes (token ids, pixels, logits) before it writes. A run whose inference path needs VPT prompts
or LaVIN / LLaMA-Adapter adapters is refused with the reason; LoRA is merged.
"""

from eim.cli_help import verb_help
from eim.export import DTYPES, EXPORT_FORMATS, export


def add_parser(sub):
    p = sub.add_parser("export", help="write a trained run in a format other tools serve (llava-hf)", **verb_help(
        "Write a trained run as a folder other tools load with no eim installed: llava-hf is "
        "transformers' LlavaForConditionalGeneration and AutoProcessor (config, safetensors weights, "
        "tokenizer with the <image> token, CLIP image processor, a chat template rendering the prompt "
        "eim trains with). The export checks itself on probes (token ids, pixels, logits) before it "
        "writes; a run that needs VPT prompts or LaVIN / LLaMA-Adapter adapters is refused with the "
        "reason, LoRA is merged.",
        "eim export runs/llava --format llava-hf --out llava-exported",
        "eim export runs/llava --format llava-hf --out llava-bf16 --dtype bfloat16"))
    p.add_argument("checkpoint", metavar="RUN_DIR", help="run folder (its last stage), stage folder or model.safetensors")
    p.add_argument("--format", required=True, choices=sorted(EXPORT_FORMATS), help="what to write")
    p.add_argument("--out", required=True, help="folder to write (new or empty)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="weights dtype (default float32, as trained)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=run)


def run(args):
    s = export(args.checkpoint, args.out, format=args.format, dtype=args.dtype, overwrite=args.overwrite)
    print(f"exported {s['recipe']} as {s['format']} to {args.out}: {s['image_tokens']} image tokens "
          f"({s['image_token']} = id {s['image_token_id']}), vision_feature_layer {s['vision_feature_layer']}, "
          f"{s['vision_feature_select_strategy']} selection, probe logits within {s['probe_max_logit_diff']:.1e}")
    if s.get("stop_text"):
        print(f"note: eim cuts answers after {s['stop_text']!r}; transformers' generate does not")
    return 0
