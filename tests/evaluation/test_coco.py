"""`eim score coco` and eim.evaluation.coco (docs/design.md §6), checked against pycocoevalcap's own
scorers called directly on the same PTB-tokenized captions.

One real scoring run (about 10 s: METEOR's Java start-up) is shared by the module.
"""

import contextlib
import io
import json
import shutil

import pytest

from eim.cli import main
from eim.errors import DataError, EIMError
from eim.evaluation import coco

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java not installed")


def image(cocoid, split, *refs, imgid=0):
    record = {"filepath": "val2014", "filename": f"COCO_val2014_{cocoid or 0:012d}.jpg",
              "imgid": imgid, "split": split,
              "sentences": [{"raw": r, "tokens": r.lower().split(), "sentid": i}
                            for i, r in enumerate(refs)]}
    if cocoid is not None:
        record["cocoid"] = cocoid
    return record


DATASET = {"images": [
    image(391895, "test", "A man with a red helmet on a small moped on a dirt road.",
          "Man riding a motor bike on a dirt road on the countryside.",
          "A man riding on the back of a motorcycle.", imgid=0),
    image(522418, "test", "A woman wearing a net on her head cutting a cake.",
          "A woman cutting a large white sheet cake.",
          "A woman wearing a hair net cutting a large sheet cake.", imgid=1),
    image(184613, "test", "A child holding a flowered umbrella and petting a yak.",
          "A young man holding an umbrella next to a herd of cattle.", imgid=2),
    image(None, "test", "Two dogs play with a frisbee in the park.",  # no cocoid: imgid is the id
          "A pair of dogs running after a red frisbee on the grass.", imgid=3),
    image(318219, "val", "A computer screen on a desk.", imgid=4),
    image(554625, "restval", "A boy eating a slice of pizza.", imgid=5),
]}
PREDICTIONS = [
    {"image_id": 391895, "caption": "A man riding a motorcycle on a dirt road."},
    {"image_id": 522418, "caption": "A woman cutting a cake."},
    {"image_id": 184613, "caption": "A man with an umbrella near some cows."},
    {"image_id": 3, "caption": "Two dogs playing with a frisbee on the grass."},
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco")
    (folder / "dataset_coco.json").write_text(json.dumps(DATASET))
    (folder / "results.json").write_text(json.dumps(PREDICTIONS))
    return folder


@pytest.fixture(scope="module")
def cli_json(files):
    """`eim score coco --json` run once; returns (exit code, parsed stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["score", "coco", "--gt", str(files / "dataset_coco.json"),
                     "--pred", str(files / "results.json"), "--json"])
    return code, json.loads(out.getvalue())


def reference_scores():
    """pycocoevalcap called directly, the way its COCOEvalCap does (independent of eim)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    ids = {391895: 0, 522418: 1, 184613: 2, 3: 3}
    gts = {i: [{"caption": s["raw"]} for s in DATASET["images"][n]["sentences"]]
           for i, n in ids.items()}
    res = {p["image_id"]: [{"caption": p["caption"]}] for p in PREDICTIONS}
    gts, res = PTBTokenizer().tokenize(gts), PTBTokenizer().tokenize(res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"Bleu_{n + 1}": b for n, b in enumerate(bleu)}
    out["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
    return out


@needs_java
def test_cli_json_matches_pycocoevalcap(cli_json):
    code, result = cli_json
    assert code == 0
    assert list(result)[:8] == list(coco.METRICS)
    expected = reference_scores()
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, rel=1e-12), name
    assert 0 < result["Bleu_4"] < result["Bleu_1"] <= 1 and 0 < result["METEOR"] < 1
    assert result["n_images"] == 4 and result["split"] == "test"


@needs_java
def test_spice_is_null_with_a_reason(cli_json):
    reason = coco.spice_unavailable_reason()
    if reason is None:
        pytest.skip("Stanford CoreNLP is installed here, so SPICE runs")
    _, result = cli_json
    assert result["SPICE"] is None
    assert result["unavailable"]["SPICE"] == reason and "\n" not in reason
    table = coco.format_coco(result)
    assert "SPICE       n/a" in table and f"SPICE not computed: {reason}" in table
    assert f"Bleu_4  {100 * result['Bleu_4']:7.2f}" in table  # percent in the human table


def test_spice_reason_names_the_missing_jars(monkeypatch):
    monkeypatch.setattr(coco, "CORENLP_JARS", ("no-such-corenlp.jar",))
    assert "no-such-corenlp.jar missing" in coco.spice_unavailable_reason()
    with pytest.raises(EIMError, match="SPICE was requested but cannot run"):
        coco.score_captions({1: ["a dog"]}, {1: "a dog"}, spice=True)


def test_java_missing_is_an_error_with_install_hint(monkeypatch, files, capsys):
    monkeypatch.setattr(coco.shutil, "which", lambda name: None)
    with pytest.raises(coco.JavaNotFoundError, match="apt-get install openjdk-17-jre-headless"):
        coco.score_captions({1: ["a dog"]}, {1: "a dog"}, spice=False)
    assert main(["score", "coco", "--gt", str(files / "dataset_coco.json"),
                 "--pred", str(files / "results.json")]) == 2
    assert "`java` was not found on PATH" in capsys.readouterr().err


def test_missing_and_extra_predictions_are_errors(files, tmp_path, capsys):
    preds = PREDICTIONS[1:] + [{"image_id": 318219, "caption": "A desk."}]  # drop one, add val
    (tmp_path / "r.json").write_text(json.dumps(preds))
    assert main(["score", "coco", "--gt", str(files / "dataset_coco.json"),
                 "--pred", str(tmp_path / "r.json"), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "1 of 4 images of the split have no prediction (e.g. 391895)" in captured.err
    assert "1 predicted images are not in the split (e.g. 318219)" in captured.err


def test_bad_results_files(files, tmp_path):
    (tmp_path / "dup.json").write_text(json.dumps(PREDICTIONS + PREDICTIONS[:1]))
    with pytest.raises(DataError, match="duplicate prediction"):
        coco.load_predictions(tmp_path / "dup.json")
    (tmp_path / "obj.json").write_text(json.dumps({"391895": "a man"}))
    with pytest.raises(DataError, match="COCO results list"):
        coco.load_predictions(tmp_path / "obj.json")


def test_karpathy_splits(files):
    gt = files / "dataset_coco.json"
    assert list(coco.load_karpathy_references(gt, "test")) == [391895, 522418, 184613, 3]
    assert list(coco.load_karpathy_references(gt, "train")) == [554625]  # restval joins train
    with pytest.raises(DataError, match="unknown split 'dev'"):
        coco.load_karpathy_references(gt, "dev")
    # String ids in a results file still match integer cocoids.
    (files / "str.json").write_text(json.dumps([{"image_id": "318219", "caption": "x"}]))
    assert coco.load_predictions(files / "str.json") == {318219: "x"}


def test_skipped_images_leave_the_references_and_are_listed(files):
    gt = files / "dataset_coco.json"
    found = []
    refs = coco.load_karpathy_references(gt, "test", exclude=["522418", 318219], excluded=found)
    assert list(refs) == [391895, 184613, 3] and found == [522418]  # 318219 is val: not listed
    result = {m: 0.5 for m in coco.METRICS} | {"n_images": 3, "split": "test", "unavailable": {},
                                                "skipped": [{"id": 522418, "reason": "cannot decode image"}]}
    assert coco.format_coco(result).startswith("COCO captions: 3 images scored (1 bad record skipped: 522418), split test")


@needs_java
def test_score_files_without_the_skipped_images(files, tmp_path):
    preds = [p for p in PREDICTIONS if p["image_id"] != 522418]
    (tmp_path / "r.json").write_text(json.dumps(preds))
    result = coco.score_coco_files(files / "dataset_coco.json", tmp_path / "r.json", spice=False,
                                   skipped={522418: "cannot decode image x"})
    assert result["n_images"] == 3 and result["skipped"] == [{"id": 522418, "reason": "cannot decode image x"}]
