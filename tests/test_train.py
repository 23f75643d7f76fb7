"""Stages, checkpoints, resume, banks and the EIM losses on tiny models (issues 2 and 4)."""

import json

import pytest
import torch
from conftest import ListDataset, caption_samples, tiny_recipe

from eim.banks import BankProvider
from eim.commands.train import train
from eim.errors import CheckpointError, EIMError
from eim.io import load_tensors
from eim.model.multimodal import build_model
from eim.train.checkpoint import find_checkpoint, load_model_weights, tunable_state


def steps(name, n, k=1, **extra):
    over = {}
    for i in range(k):
        over[f"stages.{i}.epochs"] = None
        over[f"stages.{i}.steps"] = n
    over.update(extra)
    return over


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    ds = ListDataset(caption_samples(root, 8, captions_per_image=2))
    ds.files, ds.format, ds.split = [], "list", "train"
    return ds


class Interrupt(Exception):
    pass


def interrupt_at(stage, step):
    def cb(trainer, k, s):
        if (k, s) == (stage, step):
            raise Interrupt

    return cb


def final_weights(run_dir):
    last = sorted(run_dir.glob("stage-*/model.safetensors"))[-1]
    return load_tensors(last)[0]


@pytest.mark.parametrize("name,k", [("clipcap", 1), ("clipcap_eim", 3)])
def test_resume_after_interrupt_equals_uninterrupted(tiny_dir, data, tmp_path, name, k):
    over = steps(name, 6, k, **{"train.save_every": 2})
    torch.manual_seed(0)
    train(tiny_recipe(tiny_dir, name, overrides=over), data, tmp_path / "full", quiet=True)
    # interrupted in the middle of the last stage, after its checkpoint at step 4
    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        train(tiny_recipe(tiny_dir, name, overrides=over), data, tmp_path / "cut", quiet=True,
              callbacks=[interrupt_at(k - 1, 5)])
    assert (sorted((tmp_path / "cut").glob("stage-*"))[-1] / "checkpoint" / "model.safetensors").exists()
    torch.manual_seed(123)  # resuming must not depend on the fresh process's RNG
    train(tiny_recipe(tiny_dir, name, overrides=over), data, tmp_path / "cut", quiet=True, resume=True)
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_stages_only_change_their_trainable_segments(tiny_dir, data, tmp_path):
    recipe = tiny_recipe(tiny_dir, "clipcap_eim", overrides=steps("e", 3, 3))
    train(recipe, data, tmp_path, quiet=True)
    torch.manual_seed(recipe.train.seed)  # as train() does, so the VPT prompts start equal
    model, _ = build_model(recipe)
    before = {k: v.clone() for k, v in tunable_state(model).items()}
    for k, stage in enumerate(recipe.stages):
        after = load_tensors(tmp_path / f"stage-{k}-{stage.name}" / "model.safetensors")[0]
        changed = {key.split(".")[0] for key in after if not torch.equal(after[key], before[key])}
        for key in after:
            if key.split(".")[0] not in stage.trainable:
                assert torch.equal(after[key], before[key]), f"stage {stage.name} changed frozen {key}"
        assert changed == set(stage.trainable), (stage.name, changed)
        before = after


def test_each_loss_decreases_when_its_stage_trains(tiny_dir, data, tmp_path):
    over = steps("e", 25, 3, **{"train.lr": 3e-3, "train.scheduler": "constant", "train.batch_size": 8})
    recipe = tiny_recipe(tiny_dir, "clipcap_eim", overrides=over)
    train(recipe, data, tmp_path, quiet=True)
    for k, stage in enumerate(recipe.stages):
        rows = [json.loads(l) for l in (tmp_path / f"stage-{k}-{stage.name}" / "metrics.jsonl").read_text().splitlines()]
        for name in stage.losses:
            first = sum(r[f"loss_{name}"] for r in rows[:3]) / 3
            last = sum(r[f"loss_{name}"] for r in rows[-3:]) / 3
            assert last < first, (stage.name, name, first, last)


def test_bank_rows_are_dataset_indices(tiny_dir, data, tmp_path):
    from eim.model.splice import TextEncoder, pad_ids
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = tiny_recipe(tiny_dir, "clipcap_eim")
    prov = BankProvider(recipe, data, tmp_path, quiet=True)
    lm_bank, emb_bank = prov.get("lm"), prov.get("embed")
    assert lm_bank.shape[0] == emb_bank.shape[0] == len(data) and lm_bank.dtype == torch.float16
    lm = AutoModelForCausalLM.from_pretrained(recipe.lm.name_or_path).eval()
    tok = AutoTokenizer.from_pretrained(recipe.lm.name_or_path)
    enc = TextEncoder(tok, recipe.train.max_length)
    for i in (0, 5, len(data) - 1):  # one sample at a time, no padding: the plain definition
        s = data[i]
        ids = torch.tensor([enc.encode_text_eos(s.instruction, s.response)])
        with torch.no_grad():
            h = lm(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
            e = lm.get_input_embeddings()(ids[0, :-1]).mean(0)
        torch.testing.assert_close(lm_bank[i].float(), torch.nn.functional.normalize(h, dim=0), atol=2e-3, rtol=0)
        torch.testing.assert_close(emb_bank[i].float(), torch.nn.functional.normalize(e, dim=0), atol=2e-3, rtol=0)
    text = prov.get("text")
    assert text.shape == (len(data), 24)  # CLIP projection_dim of the tiny CLIP
    assert torch.allclose(text.float().norm(dim=1), torch.ones(len(data)), atol=1e-2)


def test_banks_reused_when_unchanged_and_rebuilt_when_data_or_model_change(tiny_dir, data, tmp_path):
    recipe = tiny_recipe(tiny_dir, "clipcap_eim")
    p1 = BankProvider(recipe, data, tmp_path, quiet=True)
    b1 = p1.get("lm")
    p2 = BankProvider(recipe, data, tmp_path, quiet=True)
    assert torch.equal(p2.get("lm"), b1) and p2.events == [("reused", "lm")]
    fewer = ListDataset(data.samples[:-2])
    fewer.files, fewer.format, fewer.split = [], "list", "train"
    with pytest.raises(EIMError, match=r"lm.safetensors: feature bank was built from different inputs \(changed: data\)"):
        BankProvider(recipe, fewer, tmp_path, quiet=True, no_rebuild=True).get("lm")
    p3 = BankProvider(recipe, fewer, tmp_path, quiet=True)
    assert p3.get("lm").shape[0] == len(fewer) and p3.events == [("built", "lm")]
    other = tiny_recipe(tiny_dir, "clipcap_eim", lm="llama")
    p4 = BankProvider(other, fewer, tmp_path, quiet=True)
    p4.get("lm")
    assert p4.events == [("built", "lm")]


def test_interrupted_bank_build_resumes_from_parts(tiny_dir, data, tmp_path, monkeypatch):
    import eim.banks as banks

    recipe = tiny_recipe(tiny_dir, "clipcap_eim", overrides={"eim.bank_batch_size": 4})
    ref = BankProvider(recipe, data, tmp_path / "ref", quiet=True).get("embed")
    monkeypatch.setattr(banks, "PART_ROWS", 4)
    calls = []
    real = BankProvider._encoder

    def failing_encoder(self, name):
        enc = real(self, name)

        def wrapped(samples):
            calls.append(len(samples))
            if len(calls) == 3:
                raise KeyboardInterrupt
            return enc(samples)

        return wrapped

    monkeypatch.setattr(BankProvider, "_encoder", failing_encoder)
    with pytest.raises(KeyboardInterrupt):
        BankProvider(recipe, data, tmp_path / "run", quiet=True).get("embed")
    assert len(list((tmp_path / "run" / "banks" / "embed.parts").glob("*.safetensors"))) == 2
    calls.clear()
    monkeypatch.setattr(BankProvider, "_encoder", real)
    got = BankProvider(recipe, data, tmp_path / "run", quiet=True).get("embed")
    assert torch.equal(got, ref)


def test_same_image_mask_groups_captions_of_one_image(tiny_dir, data, tmp_path):
    prov = BankProvider(tiny_recipe(tiny_dir, "clipcap_eim"), data, tmp_path, quiet=True)
    g = prov.groups()
    assert g.tolist() == [i // 2 for i in range(len(data))]  # two captions per image


def test_corrupt_checkpoint_gives_clear_error(tiny_dir, data, tmp_path):
    recipe = tiny_recipe(tiny_dir, overrides=steps("c", 1))
    train(recipe, data, tmp_path, quiet=True)
    ckpt = tmp_path / "stage-0-base" / "model.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    recipe2, weights = find_checkpoint(tmp_path)
    model, _ = build_model(recipe2)
    with pytest.raises(CheckpointError, match="not a readable safetensors file .* corrupt or truncated"):
        load_model_weights(model, weights)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        find_checkpoint(tmp_path / "nope")


def test_caption_command_prints_one_caption_per_image(tiny_dir, data, tmp_path, capsys):
    from eim.cli import main

    train(tiny_recipe(tiny_dir, overrides=steps("c", 1)), data, tmp_path, quiet=True)
    imgs = [data[0].image, data[2].image]
    assert main(["caption", str(tmp_path), *imgs, "--beams", "2", "--max-new-tokens", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split("\t")[0] for l in lines] == imgs
    assert main(["caption", str(tmp_path), str(tmp_path / "missing.png")]) == 2
    assert "missing.png: image file not found" in capsys.readouterr().err


def test_lora_modes_train_only_lora_and_projector(tiny_dir, data, tmp_path):
    over = steps("l", 2, 3, **{"vision.trainable": "lora", "lm.trainable": "lora", "lm.lora_target": ["c_attn"]})
    recipe = tiny_recipe(tiny_dir, "clipcap_eim", overrides=over)
    train(recipe, data, tmp_path, quiet=True)
    final = load_tensors(tmp_path / "stage-2-base_ie" / "model.safetensors")[0]
    assert final and all(k.startswith("projector.") or "lora_" in k for k in final)
    assert any(k.startswith("vision.") for k in final) and any(k.startswith("lm.") for k in final)
    torch.manual_seed(recipe.train.seed)
    model, _ = build_model(recipe)
    init = tunable_state(model)
    lm_lora_b = [k for k in final if k.startswith("lm.") and "lora_B" in k]
    assert lm_lora_b and any(not torch.equal(final[k], init[k]) for k in lm_lora_b)  # LoRA B starts at 0, then trains
