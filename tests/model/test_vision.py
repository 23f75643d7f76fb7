"""The vision segment (eim.model.vision): VPT prompts, gated or not, and CLIP's own features."""

import pytest
import torch
from helpers import caption_samples, tiny_recipe
from transformers import CLIPModel

from eim.losses import IELoss, StepContext
from eim.model.multimodal import build_model
from eim.model.vision import features_of, load_image_processor


def _pixels(tiny_dir, tmp_path):
    samples = caption_samples(tmp_path, 4)
    proc = load_image_processor(tiny_dir / "clip")
    from eim.data import load_image

    return proc(images=[load_image(s.image) for s in samples], return_tensors="pt")["pixel_values"]


@pytest.mark.parametrize("gate", [True, False], ids=["gated", "plain"])
def test_prompted_tower_and_the_ie_query_against_clip_itself(tiny_dir, tmp_path, gate):
    """Gated VPT starts as the pretrained tower exactly, and the loss_IE query then equals
    ``CLIPModel.get_image_features``; plain VPT's random prompts perturb both."""
    torch.manual_seed(0)
    recipe = tiny_recipe(tiny_dir, "clipcap_eim", overrides={"vision.prompt_gate": gate})
    model, _ = build_model(recipe)
    model.eval()
    clip = CLIPModel.from_pretrained(tiny_dir / "clip").eval()
    pix = _pixels(tiny_dir, tmp_path)
    loss = IELoss(recipe, banks=type("B", (), {"get": lambda self, n: torch.zeros(4, 24)})(), model=model)
    got = {}
    loss.infonce = lambda q, index, like=None: got.setdefault("q", q.detach()).sum()
    batch = {"pixel_values": pix, "has_image": torch.ones(4, dtype=torch.bool), "index": torch.arange(4)}
    with torch.no_grad():
        loss(StepContext(model, batch, need_cls=True))
        feats = model.vision(pix)
        ref = clip.vision_model.post_layernorm(clip.vision_model(pixel_values=pix).last_hidden_state)
        img = features_of(clip.get_image_features(pixel_values=pix))
    cos = torch.nn.functional.cosine_similarity(got["q"], img, dim=1)
    if gate:
        torch.testing.assert_close(feats, ref, atol=1e-5, rtol=0)
        assert (cos > 0.9999).all(), cos
    else:
        assert (feats - ref).abs().max() > 1e-3 and (cos < 0.9999).any()


def test_gated_prompts_learn(tiny_dir, tmp_path):
    """The gate gets a gradient at step 0 (the prompts' is 0 there, as with LLaMA-Adapter's
    zero-init gates); once it has moved, the prompts get one too."""
    torch.manual_seed(0)
    model, _ = build_model(tiny_recipe(tiny_dir, "clipcap_eim", overrides={"vision.prompt_gate": True}))
    v = model.vision
    pix = _pixels(tiny_dir, tmp_path)
    v(pix).square().mean().backward()
    assert v.prompt_gates.grad.abs().sum() > 0 and v.prompts.grad.abs().sum() == 0
    with torch.no_grad():
        v.prompt_gates.fill_(0.1)
    v.zero_grad()
    v(pix).square().mean().backward()
    assert v.prompts.grad.abs().sum() > 0
    assert set(map(id, v.tunable_parameters())) == {id(v.prompts), id(v.prompt_gates)}


def test_feature_layer_is_llavas_hidden_state_and_keep_cls_its_selection(tiny_dir):
    """``feature_layer: -2`` + ``keep_cls: false`` are exactly LLaVA's ``hidden_states[-2][:, 1:]``
    of transformers' ``CLIPVisionModel``; with ``return_cls`` (loss_IE) the features are the same."""
    from transformers import CLIPVisionModel

    from eim.config import VisionConfig
    from eim.errors import ConfigError
    from eim.model.vision import build_vision

    hf = CLIPVisionModel.from_pretrained(tiny_dir / "clip").eval()
    pix = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        states = hf(pixel_values=pix, output_hidden_states=True).hidden_states
        for layer in (-2, -1, 0, 1):
            for keep in (True, False):
                v = build_vision(VisionConfig(name_or_path=str(tiny_dir / "clip"), features="full",
                                              feature_layer=layer, keep_cls=keep)).eval()
                want = states[layer] if keep else states[layer][:, 1:]
                got = v(pix)
                assert torch.allclose(got, want, atol=1e-6), (layer, keep)
                feats, cls = v(pix, return_cls=True)
                assert torch.allclose(feats, want, atol=1e-6) and cls.shape == (2, 32)
                assert v.num_tokens == want.shape[1]
    with pytest.raises(ConfigError, match="outside"):
        build_vision(VisionConfig(name_or_path=str(tiny_dir / "clip"), features="full", feature_layer=5))(pix)
    with pytest.raises(ConfigError, match="need vision.features 'full'"):
        VisionConfig(features="pooled", feature_layer=-2)
