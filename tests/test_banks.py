"""Feature banks: rows are dataset indices, fingerprints, resumable builds, same-image groups (eim.banks)."""

import pytest
import torch
from helpers import ListDataset, caption_samples, tiny_recipe

from eim.banks import BankProvider
from eim.errors import EIMError


def test_bank_rows_are_dataset_indices(tiny_dir, data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eim.model.splice import TextEncoder

    recipe = tiny_recipe(tiny_dir, "clipcap_eim")
    prov = BankProvider(recipe, data, tmp_path, quiet=True)
    lm_bank, emb_bank = prov.get("lm"), prov.get("embed")
    assert lm_bank.shape[0] == emb_bank.shape[0] == len(data) and lm_bank.dtype == torch.float16
    # float32 rows, batches of 3 over length-sorted rows: every row is still its own sample's
    exact = BankProvider(tiny_recipe(tiny_dir, "clipcap_eim", overrides={"eim.bank_dtype": "float32",
                                                                         "eim.bank_batch_size": 3}),
                         data, tmp_path / "f32", quiet=True).get("lm")
    lm = AutoModelForCausalLM.from_pretrained(recipe.lm.name_or_path).eval()
    tok = AutoTokenizer.from_pretrained(recipe.lm.name_or_path)
    enc = TextEncoder(tok, recipe.train.max_length)
    lengths = [len(enc.encode_text_eos(data[i].instruction, data[i].response)) for i in range(len(data))]
    assert lengths != sorted(lengths)  # the build reorders rows into batches
    for i in range(len(data)):  # one sample at a time, no padding: the plain definition
        s = data[i]
        ids = torch.tensor([enc.encode_text_eos(s.instruction, s.response)])
        with torch.no_grad():
            h = lm(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
            e = lm.get_input_embeddings()(ids[0, :-1]).mean(0)
        torch.testing.assert_close(exact[i], torch.nn.functional.normalize(h, dim=0), atol=1e-5, rtol=0)
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
        prepare, enc = real(self, name)

        def wrapped(seqs):
            calls.append(len(seqs))
            if len(calls) == 3:
                raise KeyboardInterrupt
            return enc(seqs)

        return prepare, wrapped

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


def test_bank_provider_in_one_process_is_unsharded(tiny_dir, tmp_path):
    from eim.banks import BankProvider

    data = ListDataset(caption_samples(tmp_path / "img", 4))
    data.files, data.format, data.split = [], "list", "train"
    prov = BankProvider(tiny_recipe(tiny_dir, "clipcap_eim"), data, tmp_path, quiet=True, shard=True)
    assert not prov.sharded and prov.shard_offset("lm") == 0 and prov.get("lm").shape[0] == len(data)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-eos-2", "modern-eos"])
def test_text_bank_rows_are_clip_text_features_on_a_published_layout(tmp_path, legacy, capsys):
    """``eim banks build`` on a CLIP laid out like openai/clip-vit-* (CLIP tokenizer with
    <|startoftext|>/<|endoftext|>; the legacy ``eos_token_id = 2`` config or a modern one): every
    text row equals ``CLIPModel.get_text_features`` of the tokenizer's own encoding (issue 13).
    The text model holds 8 positions, so long captions are cut by the tokenizer, EOT kept."""
    from transformers import AutoTokenizer, CLIPModel

    from eim.cli import main
    from eim.io import load_tensors
    from eim_harness.tiny import make_clip_tokenizer, make_tiny_clip, make_tiny_lm, make_tokenizer
    from eim.model.vision import features_of

    caps = ["A red circle.", "a Blue square that is on white one", "one green circle on white that is a circle"]
    samples = caption_samples(tmp_path / "img", 3)
    for s, c in zip(samples, caps):
        s.response = c
    make_tiny_clip(tmp_path / "clip", make_clip_tokenizer(caps * 5, vocab_size=560), max_text_len=8, legacy_eos=legacy)
    make_tiny_lm(tmp_path / "gpt2", make_tokenizer(caps * 5, vocab_size=300))
    coco = tmp_path / "coco"
    coco.mkdir()
    images = [{"filepath": "", "filename": s.image, "imgid": i, "cocoid": i, "split": "train",
               "sentences": [{"raw": s.response, "tokens": s.response.split(), "sentid": i}]} for i, s in enumerate(samples)]
    (coco / "dataset_coco.json").write_text(__import__("json").dumps({"images": images}))
    assert main(["banks", "build", "clipcap_eim", "--data", str(coco), "--out", str(tmp_path / "run"), "--bank", "text",
                 "--vision.name_or_path", str(tmp_path / "clip"), "--lm.name_or_path", str(tmp_path / "gpt2"),
                 "--eim.bank_dtype", "float32", "--quiet"]) == 0
    bank = load_tensors(tmp_path / "run" / "banks" / "text.safetensors")[0]["bank"]
    clip = CLIPModel.from_pretrained(tmp_path / "clip").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "clip")
    assert len(tok(caps[2]).input_ids) > 8  # the long caption is cut
    for i, c in enumerate(caps):  # one caption at a time: no padding, the library's own definition
        enc = tok([c], truncation=True, max_length=8, return_tensors="pt")
        with torch.no_grad():
            ref = features_of(clip.get_text_features(**enc))[0]
        cos = torch.nn.functional.cosine_similarity(bank[i], ref, dim=0)
        assert cos >= 0.999, (i, c, float(cos))


def test_text_bank_encodes_scienceqa_captions_where_given(tiny_dir, tmp_path):
    """loss_IE's keys are captions (docs/design.md §2): on ScienceQA with captions.json the text row
    of an image problem is CLIP's text feature of its caption, not of its QCM-ALE response; a
    text-only problem (never a loss_IE query) keeps its response; the caption file is in the
    fingerprint, so adding it rebuilds the bank."""
    import json

    from format_files import write_sqa
    from transformers import AutoTokenizer, CLIPModel

    from eim.data import load_dataset
    from eim.model.vision import features_of

    root = write_sqa(tmp_path / "sqa")
    recipe = tiny_recipe(tiny_dir, "clipcap_eim")
    before = BankProvider(recipe, load_dataset(root, split="train"), tmp_path / "run", quiet=True).get("text")
    (root / "captions.json").write_text(json.dumps({"captions": {"1": "a red circle on white ."}}))
    ds = load_dataset(root, split="train")
    bank = BankProvider(recipe, ds, tmp_path / "run", quiet=True).get("text")
    clip = CLIPModel.from_pretrained(recipe.vision.name_or_path).eval()
    tok = AutoTokenizer.from_pretrained(recipe.vision.name_or_path)
    n = clip.config.text_config.max_position_embeddings

    def feature(text):
        with torch.no_grad():
            return features_of(clip.get_text_features(**tok([text], truncation=True, max_length=n, return_tensors="pt")))[0]

    cos = torch.nn.functional.cosine_similarity
    assert cos(bank[0].float(), feature("a red circle on white ."), dim=0) > 0.999
    assert cos(before[0].float(), feature(ds[0].response), dim=0) > 0.999
    assert cos(bank[0].float(), before[0].float(), dim=0) < 0.99  # the caption, not the response
    torch.testing.assert_close(bank[1], before[1])  # text-only problem: its response, as before


def test_a_conversations_bank_row_and_its_loss_lm_query_read_the_bare_text(tiny_dir, tmp_path):
    """A multi-turn sample's ``lm`` bank row is the frozen LLM at the last EOS of every turn in the bare
    layout (docs/design.md §2), whatever the stage's template; loss_LM's query in a vicuna_v1 stage
    reads those same ids (``bank_ids``), so at step 0 it is the bank row."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eim.data.sample import Sample
    from eim.losses import LMLoss, StepContext
    from eim.model.multimodal import build_model
    from eim.model.splice import IGNORE, TextEncoder
    from eim.training.collate import Collator
    from helpers import ListDataset

    caps = caption_samples(tmp_path / "img", 4)
    rows = [Sample(i, s.image, "What is it?", s.response, turns=[("What is it?", s.response), ("Is it big?", "No.")])
            for i, s in enumerate(caps)]
    data = ListDataset(rows)
    data.files, data.format, data.split = [], "list", "train"
    recipe = tiny_recipe(tiny_dir, "llava_eim", lm="llama", overrides={"eim.bank_dtype": "float32",
                                                                        "train.max_length": 40})
    prov = BankProvider(recipe, data, tmp_path / "banks", quiet=True)
    bank = prov.get("lm")
    lm = AutoModelForCausalLM.from_pretrained(recipe.lm.name_or_path).eval()
    tok = AutoTokenizer.from_pretrained(recipe.lm.name_or_path)
    bare = TextEncoder(tok, 40)
    for i, s in enumerate(rows):
        ids = bare.encode_bare(s)
        assert ids == bare.encode_sample(Sample(0, None, "", "", turns=s.turns))[0]  # the raw layout of both turns
        assert tok.decode(ids).count(tok.eos_token) == 2
        with torch.no_grad():
            h = lm(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0, -1]
        torch.testing.assert_close(bank[i], torch.nn.functional.normalize(h, dim=0), atol=1e-5, rtol=0)
    model, tok = build_model(recipe)
    model.eval()
    enc = TextEncoder.for_recipe(tok, recipe, recipe.stages[1])  # the lm stage: vicuna_v1
    batch = Collator(enc, None, mode="text", bank_text=True)(rows)
    assert (batch["labels"] != IGNORE).any()
    loss, got = LMLoss(recipe, prov), {}
    loss.infonce = lambda q, index, like=None: got.setdefault("q", q.detach()).sum()
    loss(StepContext(model, batch))
    cos = torch.nn.functional.cosine_similarity(got["q"], bank[batch["index"]], dim=1)
    assert (cos > 0.9999).all(), cos
    templated = Collator(enc, None, mode="train", bank_text=True, load_pixels=False)(rows)  # a base + lm stage
    assert templated["input_ids"].shape != batch["input_ids"].shape and "bank_ids" in templated
    assert torch.equal(templated["bank_ids"], batch["input_ids"])
