"""``eim caption`` prints one caption per image."""

from helpers import steps, tiny_recipe

from eim.api import train


def test_caption_command_prints_one_caption_per_image(tiny_dir, data, tmp_path, capsys):
    from eim.cli import main

    train(tiny_recipe(tiny_dir, overrides=steps("c", 1)), data, tmp_path, quiet=True)
    imgs = [data[0].image, data[2].image]
    assert main(["caption", str(tmp_path), *imgs, "--beams", "2", "--max-new-tokens", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split("\t")[0] for l in lines] == imgs
    assert main(["caption", str(tmp_path), str(tmp_path / "missing.png")]) == 2
    assert "missing.png: image file not found" in capsys.readouterr().err
