"""Each loader reads a small hand-written fixture in the published format (docs/design.md §5).

The records mirror the real files (field names, value styles, layouts); images are tiny files
written with PIL into tmp_path.
"""

import json
import os
import re

import pytest
from format_files import CAPTIONS, coco_record, image, write_coco, write_mme, write_sqa

from eim.data import load_dataset, load_image
from eim.data.formats.alpaca import PROMPT_INPUT, PROMPT_NO_INPUT
from eim.data.formats.scienceqa import ANSWER_PATTERN
from eim.errors import DataError


@pytest.fixture
def coco(tmp_path):
    recs = [
        coco_record(391895, 0, "COCO_val2014_000000391895.jpg", "test", CAPTIONS,
                    sentid0=770337),
        coco_record(522418, 1, "COCO_val2014_000000522418.jpg", "restval",
                    ["A woman wearing a net on her head cutting a cake. "] * 2, sentid0=681330),
        coco_record(184613, 2, "COCO_train2014_000000184613.jpg", "train",
                    ["A child holding a flowered umbrella and petting a yak."],
                    filepath="train2014", sentid0=1),
        coco_record(318219, 3, "COCO_val2014_000000318219.jpg", "val",
                    ["A computer monitor and keyboard on a desk."], sentid0=2),
    ]
    return write_coco(tmp_path / "coco", recs)


def test_coco_train_mode_one_sample_per_caption(coco):
    ds = load_dataset(coco, split="train")
    assert ds.format == "coco" and ds.split == "train" and ds.files == [str(coco)]
    assert len(ds) == 3  # restval's two captions join train's one
    s = ds[0]
    assert s.index == 0 and s.instruction == ""
    assert s.image == str(coco.parent / "val2014" / "COCO_val2014_000000522418.jpg")
    assert s.response == "A woman wearing a net on her head cutting a cake."  # stripped
    assert s.image_id == 522418 and s.meta["image_key"] == 522418
    assert s.meta["split"] == "restval" and s.meta["sentid"] == 681330
    assert [ds[i].index for i in range(len(ds))] == [0, 1, 2]
    assert load_image(s.image).mode == "RGB"


def test_coco_eval_mode_one_sample_per_image_with_references(coco):
    ds = load_dataset(coco, split="test", mode="eval")
    assert len(ds) == 1
    s = ds[0]
    assert s.image.endswith(os.path.join("val2014", "COCO_val2014_000000391895.jpg"))
    assert s.meta["references"] == [c.strip() for c in CAPTIONS]  # raw text, stripped
    assert s.image_id == 391895 and s.response == CAPTIONS[0].strip()
    assert len(load_dataset(coco, split="test")) == 5


def test_coco_imgid_when_no_cocoid_and_image_root(tmp_path):
    rec = coco_record(None, 7, "1000268201_693b08cb0e.jpg", "train", ["A child in a pink dress."])
    del rec["cocoid"], rec["filepath"]  # Karpathy's Flickr8k file has neither
    image(tmp_path / "imgs" / rec["filename"], "JPEG")
    path = tmp_path / "dataset_flickr8k.json"
    path.write_text(json.dumps({"images": [rec], "dataset": "flickr8k"}))
    ds = load_dataset(path, image_root=tmp_path / "imgs")
    assert ds.format == "coco" and ds[0].image_id == 7 and ds[0].meta["image_key"] == 7


def test_scienceqa_qcm_ale_prompt(tmp_path):
    root = write_sqa(tmp_path / "sqa")
    ds = load_dataset(root, split="train")
    assert ds.format == "scienceqa" and len(ds) == 2
    assert ds.files == [str(root / "problems.json"), str(root / "pid_splits.json")]
    s = ds[0]
    assert s.image == str(root / "images" / "train" / "1" / "image.png")
    assert s.instruction == (
        "Question: Which of these states is farthest north?\nContext: N/A\n"
        "Options: (A) West Virginia (B) Louisiana (C) Arizona (D) Oklahoma\nResponse:")
    assert s.response == (
        "The answer is A. BECAUSE: Maps have four cardinal directions, or main directions. "
        "Those directions are north, south, east, and west.\\nA compass rose is a set of "
        "arrows. To find the answer, look at the compass rose. West Virginia is farthest north.")
    import re
    assert re.match(ANSWER_PATTERN, s.response).group(1) == "A"
    assert s.image_id == "1" and s.meta["answer"] == "A" and s.meta["has_image"]
    assert s.meta["categories"] == ["SOC", "IMG", "G1-6"]
    t = ds[1]  # text-only, with a hint, no lecture/solution
    assert t.image is None and t.meta["hint"].startswith("The passage")
    assert "Context: The passage below describes an experiment.\n\nTom placed" in t.instruction
    assert t.response == "The answer is B."
    assert t.meta["categories"] == ["NAT", "TXT", "G7-12"]
    mini = load_dataset(root / "problems.json", split="minitest")
    assert len(mini) == 1 and mini[0].meta["categories"] == ["LAN", "NO", "G1-6"]


def test_scienceqa_captions_file_gives_image_problems_their_caption(tmp_path):
    """captions.json beside problems.json ({"captions": {qid: text}}, ScienceQA's/LaVIN's layout)
    gives image problems ``Sample.caption``: loss_IE's text key; the prompt is unchanged."""
    root = write_sqa(tmp_path / "sqa")
    plain = load_dataset(root, split="train")
    (root / "captions.json").write_text(json.dumps({"captions": {"1": " A map of the United States. ",
                                                                 "2": "unused: problem 2 has no image"}}))
    ds = load_dataset(root, split="train")
    assert ds.files == [str(root / "problems.json"), str(root / "pid_splits.json"), str(root / "captions.json")]
    s, t = ds[0], ds[1]
    assert s.caption == s.ie_text == "A map of the United States."
    assert (s.instruction, s.response) == (plain[0].instruction, plain[0].response)
    assert t.image is None and t.caption is None and t.ie_text == t.response  # text-only: no image to caption
    assert plain[0].caption is None and plain[0].ie_text == plain[0].response  # no file: the response


@pytest.mark.parametrize("content", ['{"1": "a map"}', '{"captions": ["a map"]}', '{"captions": {"1": 3}}'])
def test_scienceqa_bad_captions_file_is_named(tmp_path, content):
    root = write_sqa(tmp_path / "sqa")
    (root / "captions.json").write_text(content)
    with pytest.raises(DataError, match="captions.json"):
        load_dataset(root, split="train")


def test_scienceqa_missing_captions_path_is_named(tmp_path):
    from eim.data.formats import ScienceQA

    root = write_sqa(tmp_path / "sqa")
    with pytest.raises(DataError, match="no such captions file"):
        ScienceQA(root, captions=tmp_path / "elsewhere.json")
    ds = ScienceQA(root, captions=_captions(tmp_path / "elsewhere.json", {"1": "a map"}))
    assert ds[0].caption == "a map"


def _captions(path, caps):
    path.write_text(json.dumps({"captions": caps}))
    return path


def test_llava_conversation_is_one_sample(tmp_path):
    """A LLaVA record is one sample: its turns (every answer a target), <image> stripped from the text."""
    image(tmp_path / "train2017" / "000000033471.jpg", "JPEG")
    data = [
        {"id": "000000033471", "image": "000000033471.jpg", "conversations": [
            {"from": "human", "value": "What are the colors of the bus in the image?\n<image>"},
            {"from": "gpt", "value": "The bus in the image is white and red."},
            {"from": "human", "value": "What feature can be seen on the back of the bus?"},
            {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
        {"id": "i6IyJda_0", "conversations": [
            {"from": "human", "value": "How to tell if a customer segment is well segmented?"},
            {"from": "gpt", "value": "Check that it is homogeneous and distinct."}]},
    ]
    path = tmp_path / "llava_instruct_150k.json"
    path.write_text(json.dumps(data))
    ds = load_dataset(path, image_root=tmp_path / "train2017")
    assert ds.format == "llava" and len(ds) == 2
    a, c = ds[0], ds[1]
    assert a.instruction == "What are the colors of the bus in the image?"  # <image> stripped
    assert a.response == "The bus in the image is white and red."
    assert a.conversation == [("What are the colors of the bus in the image?", "The bus in the image is white and red."),
                              ("What feature can be seen on the back of the bus?",
                               "The back of the bus features an advertisement.")]
    assert a.image == str(tmp_path / "train2017" / "000000033471.jpg")
    assert a.meta["turns"] == 2 and a.image_id == "000000033471"
    assert c.image is None and c.turns is None and c.response == "Check that it is homogeneous and distinct."
    jsonl = tmp_path / "mix.jsonl"  # the same records as JSON Lines
    jsonl.write_text("\n".join(json.dumps(r) for r in data) + "\n")
    same = load_dataset(jsonl, image_root=tmp_path / "train2017")
    assert same.format == "llava" and [s.conversation for s in same] == [s.conversation for s in ds]


def test_llava_optional_caption_is_the_loss_ie_key(tmp_path):
    """An optional per-record ``caption`` (eim's addition) is the sample's Sample.caption, the text
    loss_IE pairs with the image; without it the key is the first response."""
    image(tmp_path / "a.png", "PNG")
    conv = [{"from": "human", "value": "<image>\nIs there a red circle? Please answer yes or no."},
            {"from": "gpt", "value": "Yes"}, {"from": "human", "value": "Is it big?"}, {"from": "gpt", "value": "No"}]
    path = tmp_path / "vqa.json"
    path.write_text(json.dumps([{"id": "1", "image": "a.png", "conversations": conv, "caption": " A red circle. "},
                                {"id": "2", "image": "a.png", "conversations": conv[:2]}]))
    ds = load_dataset(path)
    assert [s.caption for s in ds] == ["A red circle.", None]
    assert [s.ie_text for s in ds] == ["A red circle.", "Yes"]
    path.write_text(json.dumps([{"id": "1", "image": "a.png", "conversations": conv, "caption": ""}]))
    with pytest.raises(DataError, match="caption is not a non-empty string") as e:
        load_dataset(path)
    assert "vqa.json" in str(e.value) and "1" in str(e.value)


def test_llava_text_is_kept_as_llava_keeps_it(tmp_path):
    """LLaVA-1.5's preprocess_multimodal: the question holding <image> loses it (nothing put in its
    place) and is stripped (the template writes ``<image>\\n`` itself); every other message keeps its
    whitespace byte for byte, a text-only record's too."""
    image(tmp_path / "a.png", "PNG")
    h, g = (lambda v: {"from": "human", "value": v}), (lambda v: {"from": "gpt", "value": v})
    records = [
        {"id": "start", "image": "a.png", "conversations": [h("<image>\nWhat is it?"), g(" A circle.\n")]},
        {"id": "end", "image": "a.png", "conversations": [h("  What is it?\n<image> "), g("A circle.")]},
        {"id": "middle", "image": "a.png", "conversations": [h("What is <image> it?"), g("A circle."),
                                                             h(" Is it big?\n"), g("\tNo. ")]},
        {"id": "alone", "image": "a.png", "conversations": [h("<image>"), g("a red circle")]},
        {"id": "no marker", "image": "a.png", "conversations": [h(" What is it? "), g("A circle.")]},
        {"id": "text", "conversations": [h("  Hi?\n"), g(" Hello. ")]},
        {"id": "text, marker", "conversations": [h("Hi <image>?\n"), g("Hello.")]},
    ]
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(records))
    got = {s.image_id: s.conversation for s in load_dataset(path)}
    assert got == {"start": [("What is it?", " A circle.\n")], "end": [("What is it?", "A circle.")],
                   "middle": [("What is  it?", "A circle."), (" Is it big?\n", "\tNo. ")],
                   "alone": [("", "a red circle")], "no marker": [(" What is it? ", "A circle.")],
                   "text": [("  Hi?\n", " Hello. ")], "text, marker": [("Hi ?", "Hello.")]}


@pytest.mark.parametrize("conversation, reason", [
    (["<image>\nWhat?", "A.", "And <image>?", "B."], "<image> in turns 0 and 2; one image per sample"),
    (["What?", "<image> A."], "turn 1: an answer cannot hold the image"),
    (["What?", " \n "], "empty response (turn 1)"),
    (["What?", "A.", " \t", "B."], "empty question (turn 2)"),
])
def test_bad_llava_turns_are_named(tmp_path, conversation, reason):
    image(tmp_path / "a.png", "PNG")
    conv = [{"from": "human" if k % 2 == 0 else "gpt", "value": v} for k, v in enumerate(conversation)]
    path = tmp_path / "l.json"
    path.write_text(json.dumps([{"id": "r", "image": "a.png", "conversations": conv}]))
    with pytest.raises(DataError, match=re.escape("record r: " + reason)):
        load_dataset(path)


def test_messages_keep_whitespace_as_llava_does(tmp_path):
    """The user message holding the image (a marker or an image part) is stripped; the rest as written."""
    image(tmp_path / "a.png", "PNG")
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([
        {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Describe it.\n"}]},
                      {"role": "assistant", "content": " A red circle. "},
                      {"role": "user", "content": " Big? "}, {"role": "assistant", "content": "No.\n"}],
         "images": ["a.png"]},
        {"messages": [{"role": "user", "content": "What <image> is it? "}, {"role": "assistant", "content": "A."}],
         "images": ["a.png"]}]))
    ds = load_dataset(path)
    assert ds[0].conversation == [("Describe it.", " A red circle. "), (" Big? ", "No.\n")]
    assert ds[1].conversation == [("What  is it?", "A.")]


def test_messages_layout_string_and_typed_parts(tmp_path):
    """TRL's / LLaMA-Factory's {"messages", "images"} records, JSON or JSON Lines: a system message is
    the sample's own system line, the image goes to the first user turn, content may be typed parts."""
    image(tmp_path / "a.png", "PNG")
    records = [
        {"messages": [{"role": "system", "content": "Answer briefly."},
                      {"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "A circle."},
                      {"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "Red."}],
         "images": ["a.png"]},
        {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]}],
         "images": ["a.png"], "caption": "a red circle"},
        {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]},
    ]
    for path in (tmp_path / "chat.json", tmp_path / "chat.jsonl"):
        path.write_text(json.dumps(records) if path.suffix == ".json" else "\n".join(map(json.dumps, records)))
        ds = load_dataset(path)
        assert ds.format == "messages" and len(ds) == 3
        assert ds[0].system == "Answer briefly." and ds[0].conversation == [("What is it?", "A circle."), ("Colour?", "Red.")]
        assert ds[0].image == ds[1].image == str(tmp_path / "a.png") and ds[2].image is None
        assert ds[1].conversation == [("Describe it.", "A red circle.")] and ds[1].ie_text == "a red circle"


@pytest.mark.parametrize("record, reason", [
    ({"messages": [{"role": "user", "content": "<image>What?"}, {"role": "assistant", "content": "A."}],
      "images": ["a.png", "b.png"]}, "holds 2 images; eim trains one image per sample, as LLaVA-1.5 does"),
    ({"messages": [{"role": "user", "content": "<image>What?"}, {"role": "assistant", "content": "A."}]},
     "marks an image but 'images' names none"),
    ({"messages": [{"role": "user", "content": "What?"}]}, "the conversation must end with an answer"),
    ({"messages": [{"role": "assistant", "content": "A."}, {"role": "user", "content": "Q?"}]},
     "expected 'user' then 'assistant'"),
])
def test_bad_message_records_are_named_and_skippable(tmp_path, record, reason):
    image(tmp_path / "a.png", "PNG")
    image(tmp_path / "b.png", "PNG")
    good = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n{not json\n")
    with pytest.raises(DataError) as e:
        load_dataset(path)
    assert "chat.jsonl" in str(e.value) and "line 2" in str(e.value) and reason in str(e.value)
    ds = load_dataset(path, skip_bad=True)
    assert len(ds) == 1 and [r for r, _ in ds.skipped] == ["line 2", "line 3"]
    assert "malformed JSON" in ds.skipped[1][1]


def test_alpaca_uses_the_stanford_prompt(tmp_path):
    data = [{"instruction": "Give three tips for staying healthy.", "input": "",
             "output": "1.Eat a balanced diet.\n2. Exercise regularly.\n3. Get enough sleep."},
            {"instruction": "Identify the odd one out.", "input": "Twitter, Instagram, Telegram",
             "output": "Telegram"}]
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps(data, indent=4))
    ds = load_dataset(path)
    assert ds.format == "alpaca" and len(ds) == 2 and ds[0].image is None
    assert ds[0].instruction == PROMPT_NO_INPUT.format(
        instruction="Give three tips for staying healthy.")
    assert ds[1].instruction == PROMPT_INPUT.format(instruction="Identify the odd one out.",
                                                    input="Twitter, Instagram, Telegram")
    assert ds[1].response == "Telegram"


def test_mme_both_layouts(tmp_path):
    root = write_mme(tmp_path / "MME_Benchmark_release_version")
    ds = load_dataset(root)
    assert ds.format == "mme" and len(ds) == 4 and len(ds.files) == 2
    first = ds[0]  # subtasks in sorted order: artwork before existence
    assert first.meta == {"subtask": "artwork", "order": 0, "answer": "Yes",
                          "image_name": "10002.jpg", "question": first.instruction}
    assert first.image == str(root / "artwork" / "images" / "10002.jpg")
    assert (ds[1].response, ds[1].meta["order"]) == ("No", 1)
    assert ds[2].meta["subtask"] == "existence" and ds[2].image_id == "000000006040.jpg"
    assert ds[3].instruction == "Is there a bed in this image? Please answer yes or no."
