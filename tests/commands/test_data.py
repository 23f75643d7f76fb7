"""`eim data check` (eim.commands.data): decodes every image, lists every bad record, exits 1 on one."""

from format_files import CAPTIONS, coco_record, truncate, write_coco, write_mme

from eim.cli import main


def test_check_decodes_every_image_and_lists_what_skip_bad_skips(tmp_path, capsys):
    recs = [coco_record(1, 0, "a.jpg", "test", CAPTIONS), coco_record(2, 1, "b.jpg", "test", ["A cake."]),
            coco_record(3, 2, "c.jpg", "train", ["A dog."])]
    path = write_coco(tmp_path / "coco", recs)
    assert main(["data", "check", "--data", str(path), "--split", "test"]) == 0
    out, err = capsys.readouterr()
    assert "coco test: 6 samples, 0 bad records\n" in out and "decode images" in err  # a progress bar
    img = truncate(tmp_path / "coco" / "val2014" / "a.jpg")
    for extra in ([], ["--skip-bad"]):  # lists every bad record either way
        assert main(["data", "check", "--data", str(path), "--split", "test", *extra]) == 1
        out = capsys.readouterr().out
        assert out.startswith("coco test: 1 sample, 1 bad record (pass --skip-bad to train or evaluate without them)\n")
        assert f"  1: cannot decode image {img} (OSError: " in out
    assert main(["data", "check", "--data", str(path), "--split", "test", "--mode", "eval"]) == 1
    assert "coco test: 1 sample, 1 bad record" in capsys.readouterr().out


def test_check_names_mme_split_test(tmp_path, capsys):
    root = write_mme(tmp_path / "mme")
    assert main(["data", "check", "--data", str(root)]) == 0  # --split defaults to train
    assert "mme test: 4 samples, 0 bad records\n" in capsys.readouterr().out
