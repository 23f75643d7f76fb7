"""The generated world: deterministic, written in the real formats, read by the real loaders."""

import hashlib
import json
import os

import pytest

from eim.cli import main
from eim.data import load_dataset
from eim.data.formats.scienceqa import ANSWER_PATTERN
from eim.errors import DataError

SMALL = ["--train", "20", "--val", "4", "--test", "8", "--size", "32"]


def tree_hash(root):
    """{relative path: sha256} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    assert main(["data", "shapes", "--out", str(out), "--seed", "0"] + SMALL) == 0
    return out


def test_same_seed_gives_identical_files(world, tmp_path):
    again = tmp_path / "again"
    assert main(["data", "shapes", "--out", str(again), "--seed", "0"] + SMALL) == 0
    a, b = tree_hash(world), tree_hash(again)
    assert a == b and len(a) > 50
    other = tmp_path / "other"
    assert main(["data", "shapes", "--out", str(other), "--seed", "1"] + SMALL) == 0
    assert tree_hash(other)["coco/dataset_coco.json"] != a["coco/dataset_coco.json"]


def test_refuses_to_overwrite_without_flag(world, tmp_path, capsys):
    assert main(["data", "shapes", "--out", str(world)] + SMALL) == 2
    assert "already holds coco, scienceqa, mme, llava" in capsys.readouterr().err
    out = tmp_path / "w"
    assert main(["data", "shapes", "--out", str(out), "--seed", "3"] + SMALL) == 0
    (out / "mine.txt").write_text("not the generator's")
    assert main(["data", "shapes", "--out", str(out), "--overwrite"] + SMALL) == 0
    assert tree_hash(out) == dict(tree_hash(world), **{"mine.txt": tree_hash(out)["mine.txt"]})


def test_coco_five_different_captions(world):
    ds = load_dataset(world / "coco", split="train")
    assert ds.format == "coco" and len(ds) == 20 * 5
    ev = load_dataset(world / "coco", split="train", mode="eval")
    assert len(ev) == 20 and {ev[i].meta["split"] for i in range(20)} == {"train", "restval"}
    for i in range(len(ev)):
        refs = ev[i].meta["references"]
        assert len(refs) == 5 and len(set(refs)) == 5
    # the five captions of image k are rows 5k..5k+4 and share its image_key
    assert {ds[j].meta["image_key"] for j in range(5)} == {ev[0].image_id}
    assert len(load_dataset(world / "coco" / "dataset_coco.json", split="test")) == 8 * 5
    raw = json.loads((world / "coco" / "dataset_coco.json").read_text())
    img = raw["images"][0]
    assert img["sentences"][0]["tokens"] == img["sentences"][0]["raw"].lower().strip(".") \
        .replace(",", " ").split()


def test_scienceqa_splits_and_buckets(world):
    splits = json.loads((world / "scienceqa" / "pid_splits.json").read_text())
    assert set(splits) == {"train", "val", "test", "trainval", "minitrain", "minival",
                           "minitest"}
    ds = load_dataset(world / "scienceqa", split="train")
    assert ds.format == "scienceqa" and len(ds) == 20
    import re
    for i in range(len(ds)):
        s = ds[i]
        assert re.match(ANSWER_PATTERN, s.response).group(1) == s.meta["answer"]
        assert s.instruction.startswith("Question: ") and s.instruction.endswith("\nResponse:")
        assert (s.image is None) == (not s.meta["has_image"])
    assert any(ds[i].image is None for i in range(len(ds)))
    assert any(ds[i].image for i in range(len(ds)))
    assert len(load_dataset(world / "scienceqa", split="minitest")) == 1


def test_scienceqa_captions_are_the_scenes_coco_captions(world):
    """captions.json holds one caption per image problem: the first COCO caption of the same
    scene (same split, same index, the same PNG bytes), loss_IE's text key."""
    first = {}  # COCO test image file name -> its first caption (train mode: one sample per caption)
    for c in load_dataset(world / "coco", split="test", mode="train"):
        first.setdefault(os.path.basename(c.image), c.response)
    ds = load_dataset(world / "scienceqa", split="test")
    assert str(world / "scienceqa" / "captions.json") in ds.files
    with_image = 0
    for i, s in enumerate(ds):  # the i-th problem of a split sits on the i-th COCO scene of that split
        if not s.image:
            assert s.caption is None
            continue
        name = f"shapes_test_{i:06d}.png"
        with open(s.image, "rb") as a, open(world / "coco" / "images" / "test" / name, "rb") as b:
            assert a.read() == b.read()
        assert s.caption == first[name]
        with_image += 1
    assert with_image


def test_scienceqa_populates_every_bucket(tmp_path):
    from eim.data.stats import dataset_stats

    out = tmp_path / "w"
    assert main(["data", "shapes", "--out", str(out), "--train", "5", "--val", "1", "--test",
                 "400", "--size", "16"]) == 0
    test = dataset_stats(out / "scienceqa")["scienceqa"]["test"]
    for tag in ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12"):
        assert test.get(tag, 0) > 0, tag


def test_mme_both_layouts_yes_then_no(world):
    assert (world / "mme" / "existence" / "0000.txt").exists()  # side by side
    assert (world / "mme" / "color" / "questions_answers_YN" / "0000.txt").exists()
    assert (world / "mme" / "color" / "images" / "0000.png").exists()
    ds = load_dataset(world / "mme")
    assert ds.format == "mme" and len(ds) == 4 * 2 * 2  # subtasks x (test/4) images x 2
    assert [ds[i].response for i in range(4)] == ["Yes", "No", "Yes", "No"]
    assert sorted({ds[i].meta["subtask"] for i in range(len(ds))}) == [
        "color", "count", "existence", "position"]
    assert all(ds[i].instruction.endswith("Please answer yes or no.") for i in range(len(ds)))
    val = load_dataset(world / "mme_val")  # validation questions (version 4): val//4 other scenes per subtask
    assert val.format == "mme" and len(val) == 4 * 1 * 2
    test_pngs = {(world / "mme" / p).read_bytes() for p in ("existence/0000.png", "count/0000.png")}
    assert (world / "mme_val" / "existence" / "0000.png").read_bytes() not in test_pngs


def test_llava_reads_coco_images(world):
    ds = load_dataset(world / "llava" / "instruct.json")
    assert ds.format == "llava" and len(ds) >= 20  # a conversation per training image (and text-only ones)
    assert any(s.turns for s in ds)  # multi-turn conversations: one sample each
    with_img = [ds[i] for i in range(len(ds)) if ds[i].image]
    assert with_img and all(os.path.isfile(s.image) for s in with_img)
    assert os.path.normpath(str(world / "coco" / "images" / "train")) in with_img[0].image
    assert "<image>" not in with_img[0].instruction
    assert len(load_dataset(world / "llava")) == len(ds)  # the folder holding one JSON


def test_chat_mixture_files(world):
    """Version 4: MME-style pairs on the train images (LLaVA format) and scenes in words with a
    yes/no question (Alpaca format); neither touches an MME test scene."""
    vqa = load_dataset(world / "vqa" / "llava_vqa.json")
    assert vqa.format == "llava" and len(vqa) == 2 * 20  # both questions of a pair per train image
    assert all(os.path.isfile(s.image) and "train" in s.image for s in vqa)
    assert [vqa[i].response for i in range(4)] == ["Yes", "No", "Yes", "No"]
    assert all(s.instruction.endswith("Please answer yes or no.") and "<image>" not in s.instruction for s in vqa)
    assert vqa[0].image == vqa[1].image != vqa[2].image
    # version 5: each carries its image's first COCO caption, loss_IE's key (not "Yes"/"No")
    coco = json.loads((world / "coco" / "dataset_coco.json").read_text())["images"]
    first = {im["filename"]: im["sentences"][0]["raw"] for im in coco}
    assert all(s.caption == first[os.path.basename(s.image)] for s in vqa)
    coco_train = {os.path.basename(s.image) for s in load_dataset(world / "coco", split="train")}
    assert {os.path.basename(s.image) for s in vqa} <= coco_train
    alpaca = load_dataset(world / "alpaca" / "alpaca_data.json")
    assert alpaca.format == "alpaca" and len(alpaca) == 20 and all(s.image is None for s in alpaca)
    assert {s.response for s in alpaca} == {"Yes", "No"}
    assert all("### Input:\nThe image shows " in s.instruction for s in alpaca)


def test_chat_answers_are_balanced_and_cover_every_subtask():
    import random

    from eim_harness.shapes.questions import alpaca_record, vqa_turns
    from eim_harness.shapes.scene import sample_scene
    records = [alpaca_record(random.Random(f"t:{i}")) for i in range(400)]
    assert {sub for _, sub in records} == {"existence", "count", "position", "color"}
    assert 160 < sum(r["output"] == "Yes" for r, _ in records) < 240
    subs = set()
    for i in range(200):
        rng = random.Random(f"v:{i}")
        sub, convs = vqa_turns(rng, sample_scene(rng))
        subs.add(sub)
        assert [c[1]["value"] for c in convs] == ["Yes", "No"]
    assert subs == {"existence", "count", "position", "color"}


def test_stats_cli(world, capsys):
    assert main(["data", "stats", str(world / "coco"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)["coco"]
    assert st["train"]["images"] == 20 and st["train"]["captions"] == 100
    assert 0 < st["train"]["pairwise_bleu4"] < 0.5 and 0 < st["train"]["loo_bleu4"] < 0.6
    assert main(["data", "stats", str(world)]) == 0
    text = capsys.readouterr().out
    for name in ("coco:", "scienceqa:", "mme:", "llava:", "pairwise_bleu4="):
        assert name in text


def test_check_cli(world, capsys):
    assert main(["data", "check", "--data", str(world / "scienceqa"), "--split", "val"]) == 0
    assert "scienceqa val: 4 samples, 0 bad records\n" in capsys.readouterr().out


def test_bad_arguments():
    with pytest.raises(DataError, match="--size must be at least 16"):
        from eim_harness.shapes.writer import write_shapes
        write_shapes("/nonexistent/never", size=4)


def _image_problems(kind, n=400):
    import random

    from eim_harness.shapes.problems import image_problem
    from eim_harness.shapes.scene import sample_scene

    out = []
    for i in range(n):
        rng = random.Random(i)
        p = image_problem(rng, sample_scene(rng))
        if p["lecture"].startswith(kind):
            out.append(p)
    assert out
    return out


def test_describe_choices_differ_only_in_one_colour():
    # The true sentence used synonyms ("disc", "violet") the fakes never did, so the text alone
    # gave the answer away; now every choice has the same words but one colour, at one place.
    from eim_harness.shapes.scene import COLOURS

    colours = set(COLOURS) | {"violet"}
    for p in _image_problems("A good description"):
        words = [c.rstrip(".").split() for c in p["choices"]]
        assert len({len(w) for w in words}) == 1
        differ = {j for j in range(len(words[0])) if len({w[j] for w in words}) > 1}
        j = max(differ)  # the colour word; its article ("a"/"an") may change with it
        assert differ <= {j - 1, j} and {w[j] for w in words} <= colours


def test_position_choices_never_name_the_reference():
    # The question names the reference object; offering it as a choice let the text rule it out.
    for p in _image_problems("Relative directions"):
        ref = p["question"].split(" of ", 1)[1].rstrip("?")
        assert ref not in p["choices"]


def test_quiz_drills_are_reproducible_and_answered():
    import re

    from eim_harness.shapes.quizzes import quiz_pairs

    pairs = quiz_pairs(60)
    assert pairs == quiz_pairs(60) and pairs != quiz_pairs(60, seed="other")
    described = 0
    for instruction, response in pairs:
        assert re.match(ANSWER_PATTERN, response) and " BECAUSE: " in response  # the whole QCM-ALE response
        assert "\nOptions: (A) " in instruction
        described += not instruction.startswith("Question: ")  # scene drills open with the scene in words
    assert 0 < described < len(pairs)
    assert all(i.startswith("Question: ") for i, _ in quiz_pairs(30, scene_fraction=0.0))


def test_a_world_from_an_older_generator_is_made_again(tmp_path):
    """The studies' and demos' cached worlds are reused only when this generator version wrote them."""
    from eim_harness.worlds import ensure_world, world
    from eim_harness.shapes.writer import GENERATOR_VERSION

    w = world("test", "indomain")
    data = ensure_world(tmp_path, w, quiet=True)
    cfg = data / "shapes_config.json"
    assert json.loads(cfg.read_text())["version"] == GENERATOR_VERSION
    marker = data / "coco" / "stale"
    marker.write_text("x")
    ensure_world(tmp_path, w, quiet=True)
    assert marker.exists()  # same generator and settings: reused
    old = json.loads(cfg.read_text())
    del old["version"]  # as the generator before version 2 wrote it
    cfg.write_text(json.dumps(old))
    ensure_world(tmp_path, w, quiet=True)
    assert not marker.exists() and json.loads(cfg.read_text())["version"] == GENERATOR_VERSION


def test_an_interrupted_generation_is_never_reused(tmp_path, monkeypatch):
    """shapes_config.json is written last: a world cut short is made again, not taken as whole."""
    from eim_harness.shapes import writer
    from eim_harness.worlds import ensure_world, world

    w = world("test", "indomain")

    def broken(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_write_mme", broken)
    with pytest.raises(KeyboardInterrupt):
        ensure_world(tmp_path, w, quiet=True)
    data = tmp_path / "data" / w.key
    assert (data / "coco" / "dataset_coco.json").exists() and not (data / "shapes_config.json").exists()
    monkeypatch.undo()
    ensure_world(tmp_path, w, quiet=True)
    assert writer.holds_shapes(data, writer.shapes_config(0, w.size, w.train, w.val, w.test, w.web))
    assert (data / "mme").is_dir()
