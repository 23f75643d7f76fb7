"""Architecture configs of the paper's reference models, for building them without a download.

``eim params`` builds models on the ``meta`` device; it needs only the architecture. When a
hub id is not a local folder and no hub is reachable (offline, docs/design.md §7), the config is
taken from here. Values are the published ``config.json`` fields that determine parameter count.
"""

from transformers import CLIPConfig, GPT2Config, LlamaConfig

_CLIP_B32 = dict(
    text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77),
    vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32),
    projection_dim=512,
)
_CLIP_L14 = dict(
    text_config=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=77),
    vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=224, patch_size=14),
    projection_dim=768,
)

# openai/clip-vit-large-patch14-336 (LLaVA-1.5's tower): ViT-L/14 at 336 px, 24 x 24 patches + [CLS]
_CLIP_L14_336 = dict(_CLIP_L14, vision_config=dict(_CLIP_L14["vision_config"], image_size=336))


def _llama(hidden, inter, layers, heads):
    return lambda: LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                               num_attention_heads=heads, num_key_value_heads=heads, vocab_size=32000,
                               max_position_embeddings=2048, tie_word_embeddings=False)


def _vicuna_7b():
    # lmsys/vicuna-7b-v1.5 (LLaVA-1.5-7B's LLM): LLaMA-2-7B's shapes, 4,096-token context
    return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       tie_word_embeddings=False)


def _smollm2_135m():
    # HuggingFaceTB/SmolLM2-135M(-Instruct): LLaMA architecture with GQA, 134,515,008 parameters
    return LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                       rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)


KNOWN = {
    "openai/clip-vit-base-patch32": lambda: CLIPConfig(**_CLIP_B32),
    "openai/clip-vit-large-patch14": lambda: CLIPConfig(**_CLIP_L14),
    "openai/clip-vit-large-patch14-336": lambda: CLIPConfig(**_CLIP_L14_336),
    "gpt2": lambda: GPT2Config(),
    "openai-community/gpt2": lambda: GPT2Config(),
    "huggyllama/llama-7b": _llama(4096, 11008, 32, 32),
    "huggyllama/llama-13b": _llama(5120, 13824, 40, 40),
    "lmsys/vicuna-7b-v1.5": _vicuna_7b,
    "HuggingFaceTB/SmolLM2-135M": _smollm2_135m,
    "HuggingFaceTB/SmolLM2-135M-Instruct": _smollm2_135m,
}


def known_config(name):
    factory = KNOWN.get(name)
    return factory() if factory else None
