"""Bad inputs: the exact message (file, record, remedy), and what --skip-bad drops.

Cases: missing image, unreadable image, malformed JSON, empty caption/response, unknown split,
duplicate id; across the formats (docs/design.md §5).
"""

import json
import logging
import os

import pytest
from format_files import CAPTIONS, SQA_PROBLEMS, coco_record, image, truncate, write_coco, write_mme, write_sqa

from eim.data import load_dataset
from eim.errors import DataError

REMEDY = "fix or remove the record, or pass --skip-bad to skip such records"


def two_images(tmp_path):
    """A COCO file with two test images; returns (json path, path of the first image)."""
    recs = [coco_record(391895, 0, "COCO_val2014_000000391895.jpg", "test", CAPTIONS, sentid0=10),
            coco_record(522418, 1, "COCO_val2014_000000522418.jpg", "test", ["A cake."],
                        sentid0=20)]
    path = write_coco(tmp_path / "coco", recs)
    return path, recs, str(tmp_path / "coco" / "val2014" / "COCO_val2014_000000391895.jpg")


def rewrite(path, recs):
    path.write_text(json.dumps({"images": recs, "dataset": "coco"}))


def expect_bad(path, message, n_left, n_skipped, caplog, **kw):
    """Raises `message` without skip_bad; with it, drops n_skipped records and logs once."""
    with pytest.raises(DataError) as e:
        load_dataset(path, **kw)
    assert str(e.value) == message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="eim.data"):
        ds = load_dataset(path, skip_bad=True, **kw)
    assert len(ds) == n_left and len(ds.skipped) == n_skipped
    assert [ds[i].index for i in range(len(ds))] == list(range(n_left))  # no holes
    logs = [r.getMessage() for r in caplog.records]
    noun = "bad record" if n_skipped == 1 else "bad records"
    assert len(logs) == 1 and logs[0].startswith(f"skipped {n_skipped} {noun}: ")
    return ds


def test_missing_image(tmp_path, caplog):
    path, _, img = two_images(tmp_path)
    os.remove(img)
    ds = expect_bad(path, f"{path}: record 391895: missing image {img}. {REMEDY}", 1, 1, caplog,
                    split="test")
    assert ds.skipped == [("391895", f"missing image {img}")]
    assert ds[0].image_id == 522418
    assert f"skipped 1 bad record: 391895 (missing image {img})" in caplog.text


def test_unreadable_image(tmp_path, caplog):
    path, _, img = two_images(tmp_path)
    with open(img, "wb") as f:
        f.write(b"\x00garbage, not a JPEG")
    msg = (f"{path}: record 391895: unreadable image {img} (UnidentifiedImageError: cannot "
           f"identify image file '{img}'). {REMEDY}")
    expect_bad(path, msg, 1, 1, caplog, split="test", mode="eval")


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "llava.json"
    path.write_text('[\n{"id": "1", "conversations" []}\n]\n')
    msg = (f"{path}: malformed JSON at line 2, column 29: Expecting ':' delimiter. fix the JSON "
           "syntax (a truncated download or copy often causes this)")
    for skip in (False, True):  # a broken file is not a bad record: never skipped
        with pytest.raises(DataError) as e:
            load_dataset(path, data_format="llava", skip_bad=skip)
        assert str(e.value) == msg
    coco = tmp_path / "dataset_coco.json"
    coco.write_text('{"images": [\n{"filename": "a.jpg" "split": "train"}]}')
    with pytest.raises(DataError, match=r"dataset_coco.json: malformed JSON at line 2, column 22: "
                                        r"Expecting ',' delimiter"):
        load_dataset(coco)


def test_empty_caption(tmp_path, caplog):
    path, recs, _ = two_images(tmp_path)
    recs[0]["sentences"][1]["raw"] = "  "
    rewrite(path, recs)
    expect_bad(path, f"{path}: record 391895: empty caption (sentid 11). {REMEDY}", 1, 1, caplog,
               split="test")


def test_empty_response_llava_and_alpaca(tmp_path, caplog):
    path = tmp_path / "l.json"
    path.write_text(json.dumps([
        {"id": "a", "conversations": [{"from": "human", "value": "Hi?"},
                                      {"from": "gpt", "value": " "}]},
        {"id": "b", "conversations": [{"from": "human", "value": "Hi?"},
                                      {"from": "gpt", "value": "Hello."}]}]))
    expect_bad(path, f"{path}: record a: empty response (turn 1). {REMEDY}", 1, 1, caplog)
    alp = tmp_path / "alpaca_data.json"
    alp.write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": ""},
                               {"instruction": "Say hi.", "input": "", "output": "Hi."}]))
    expect_bad(alp, f"{alp}: record #0: empty response. {REMEDY}", 1, 1, caplog)


def test_unknown_split(tmp_path, caplog):
    path, recs, _ = two_images(tmp_path)
    with pytest.raises(DataError) as e:  # the requested split: an argument error
        load_dataset(path, split="testing", skip_bad=True)
    assert str(e.value) == (f"{path}: unknown split 'testing' for COCO Karpathy (it has train, "
                            "val, test; restval joins train). pass --split train, val or test")
    recs[1]["split"] = "validation"  # a record's split: a bad record
    rewrite(path, recs)
    expect_bad(path, f"{path}: record 522418: unknown split 'validation' (expected one of "
               f"train, restval, val, test). {REMEDY}", 5, 1, caplog, split="test")
    root = write_sqa(tmp_path / "sqa")
    with pytest.raises(DataError) as e:
        load_dataset(root, split="dev")
    assert str(e.value) == (f"{root / 'pid_splits.json'}: unknown split 'dev' (this file has: "
                            "train, val, test, trainval, minitrain, minival, minitest). "
                            "pass --split with one of them")


def test_duplicate_id(tmp_path, caplog):
    path, recs, _ = two_images(tmp_path)
    recs[1]["cocoid"] = 391895
    rewrite(path, recs)
    expect_bad(path, f"{path}: record 391895: duplicate id 391895 (first at position 0). "
               f"{REMEDY}", 5, 1, caplog, split="test")
    root = write_sqa(tmp_path / "sqa", splits={"train": ["1", "2", "1"]})
    expect_bad(root, f"{root / 'problems.json'}: record 1: duplicate id 1 in split 'train'. "
               f"{REMEDY}", 2, 1, caplog)
    # a qid repeated as a key of problems.json (json would silently keep the last copy)
    text = json.dumps(SQA_PROBLEMS)
    (root / "problems.json").write_text(text[:-1] + ', "2": ' + json.dumps(SQA_PROBLEMS["2"]) + "}")
    (root / "pid_splits.json").write_text(json.dumps({"train": ["1", "2"]}))
    expect_bad(root, f"{root / 'problems.json'}: record 2: duplicate id 2 in problems.json. "
               f"{REMEDY}", 1, 1, caplog)
    llava = tmp_path / "l.json"
    conv = [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]
    llava.write_text(json.dumps([{"id": "x", "conversations": conv}] * 2))
    expect_bad(llava, f"{llava}: record x: duplicate id x (first at position 0). {REMEDY}", 1, 1,
               caplog)


def test_scienceqa_missing_image_and_bad_answer(tmp_path, caplog):
    root = write_sqa(tmp_path / "sqa")
    img = root / "images" / "train" / "1" / "image.png"
    os.remove(img)
    expect_bad(root, f"{root / 'problems.json'}: record 1: missing image {img}. {REMEDY}", 1, 1,
               caplog)
    problems = dict(SQA_PROBLEMS, **{"2": dict(SQA_PROBLEMS["2"], answer=5)})
    write_sqa(root, problems)
    expect_bad(root, f"{root / 'problems.json'}: record 2: answer index 5 is not a valid "
               f"choice. {REMEDY}", 1, 1, caplog)


def test_llava_missing_image_suggests_image_root(tmp_path, caplog):
    path = tmp_path / "l.json"
    conv = [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]
    path.write_text(json.dumps([{"id": "1", "image": "000000033471.jpg", "conversations": conv},
                                {"id": "2", "conversations": conv}]))
    missing = tmp_path / "000000033471.jpg"
    expect_bad(path, f"{path}: record 1: missing image {missing} (relative paths resolve "
               f"against the JSON's folder; pass --image-root DIR). {REMEDY}", 1, 1, caplog)


def test_mme_bad_answer_and_missing_image(tmp_path, caplog):
    root = write_mme(tmp_path / "mme")
    txt = root / "existence" / "000000006040.txt"
    txt.write_text("Is there a train in this image?\tMaybe\nIs there a bed?\tNo\n")
    expect_bad(root, f"{txt}: record existence/000000006040: line 1: answer 'Maybe' is not Yes "
               f"or No. {REMEDY}", 2, 1, caplog)
    txt.write_text("Is there a train in this image?\tYes\nIs there a bed?\tNo\n")
    os.remove(root / "artwork" / "images" / "10002.jpg")
    expect_bad(root, f"{root / 'artwork' / 'questions_answers_YN' / '10002.txt'}: record "
               f"artwork/10002: missing image {root / 'artwork' / 'images' / '10002'}.* (no "
               f"image file with this name). {REMEDY}", 2, 1, caplog)


def test_skip_message_lists_many_records_once(tmp_path, caplog):
    recs = [coco_record(i, i, f"{i}.jpg", "train", ["A cat."], filepath="", sentid0=i)
            for i in range(25)]
    path = write_coco(tmp_path / "c", recs)
    for i in range(22):
        os.remove(tmp_path / "c" / f"{i}.jpg")
    with caplog.at_level(logging.WARNING, logger="eim.data"):
        ds = load_dataset(path, skip_bad=True)
    assert len(ds) == 3 and len(ds.skipped) == 22
    assert len(caplog.records) == 1 and "... and 2 more" in caplog.text


# --- truncated images: the header is intact, the pixels are not (issue 18) ---------------------
def truncated_cases(tmp_path):
    """(dataset path, truncated image, record id, index file, samples left, records left) per format."""
    cases = {}
    path, _, img = two_images(tmp_path / "c")
    cases["coco"] = (path, truncate(img), "391895", path, 1, {"split": "test", "mode": "eval"})
    root = write_sqa(tmp_path / "sqa")
    cases["scienceqa"] = (root, truncate(root / "images" / "train" / "1" / "image.png"), "1",
                          root / "problems.json", 1, {})
    root = write_mme(tmp_path / "mme")
    txt = root / "artwork" / "questions_answers_YN" / "10002.txt"
    cases["mme"] = (root, truncate(root / "artwork" / "images" / "10002.jpg"), "artwork/10002", txt, 2, {})
    llava = tmp_path / "l.json"
    conv = [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]
    image(tmp_path / "1.png", "PNG")
    image(tmp_path / "2.png", "PNG")
    llava.write_text(json.dumps([{"id": "1", "image": "1.png", "conversations": conv},
                                 {"id": "2", "image": "2.png", "conversations": conv},
                                 {"id": "3", "image": "2.png", "conversations": conv}]))
    cases["llava"] = (llava, truncate(tmp_path / "2.png"), "2", llava, 1, {})
    return cases


@pytest.mark.parametrize("fmt", ["coco", "scienceqa", "mme", "llava"])
def test_truncated_image_found_by_decode_and_skipped_by_skip_bad(tmp_path, caplog, fmt):
    path, img, rid, file, n_left, kw = truncated_cases(tmp_path)[fmt]
    n_all = len(load_dataset(path, **kw))  # the default header check: cheap, cannot see it
    with pytest.raises(DataError) as e:  # decoding finds it, naming file, record and remedy
        load_dataset(path, check_images="decode", **kw)
    assert str(e.value).startswith(f"{file}: record {rid}: cannot decode image {img} (OSError: ")
    assert str(e.value).endswith(REMEDY)
    ds = load_dataset(path, skip_bad=True, **kw)  # --skip-bad decodes: it skips the record
    skipped = [r for r, _ in ds.skipped]
    assert skipped == [rid] or (fmt == "llava" and skipped == ["2", "3"])  # 3 shares the image
    assert ds.skipped[0][1].startswith(f"cannot decode image {img}")
    assert len(ds) == n_left < n_all and all(ds[i].image != img for i in range(len(ds)))
    assert [ds[i].index for i in range(len(ds))] == list(range(len(ds)))  # no holes
    assert f"skipped {len(skipped)} bad record" in caplog.text


def test_coco_images_count_only_what_is_left(tmp_path):
    path, _, img = two_images(tmp_path)
    truncate(img)
    assert len({s.image for s in load_dataset(path, split="test")}) == 2
    ds = load_dataset(path, split="test", skip_bad=True)
    assert len({s.image for s in ds}) == 1 and len(ds) == 1  # the other image's one caption


def test_mme_split_is_test_whatever_split_is_asked(tmp_path):
    root = write_mme(tmp_path / "mme")
    for split in ("train", "test", "val"):
        assert load_dataset(root, split=split).split == "test"
