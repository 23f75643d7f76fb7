"""``eim chat``: one-shot answers on the last line, and an interactive loop on stdin that streams."""

import io
import sys

import pytest
from helpers import llava_datasets, tiny_recipe

from eim.api import train
from eim.chat import Chat
from eim.cli import main


@pytest.fixture(scope="module")
def run(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    data = llava_datasets(root / "images")
    over = {"train.lr": 1e-2, "stages.0.lr": 1e-2, "train.max_length": 64, "generation.max_new_tokens": 6}
    for i in range(2):
        over.update({f"stages.{i}.epochs": None, f"stages.{i}.steps": 20})
    train(tiny_recipe(tiny_dir, "llava", lm="llama", overrides=over), None, root / "run", datasets=data, quiet=True)
    return root / "run", [s.image for s in data["captions"]]


def test_one_shot_prints_the_greedy_answer_last(run, capsys):
    path, images = run
    assert main(["chat", str(path), "--image", images[0], "--prompt", "What is shown here?"]) == 0
    last = capsys.readouterr().out.rstrip("\n").split("\n")[-1]
    assert last == Chat.load(path).ask("What is shown here?", image=images[0])
    assert main(["chat", str(path), "--image", images[0], "--prompt", "What is shown here?",
                 "--max-new-tokens", "1"]) == 0
    one = capsys.readouterr().out.rstrip("\n").split("\n")[-1]
    assert len(one.split()) <= 1 and last.startswith(one)
    assert main(["chat", str(path), "--image", "missing.png", "--prompt", "hi"]) == 2
    assert "missing.png: image file not found" in capsys.readouterr().err


def test_interactive_loop_streams_each_turn_and_keeps_the_conversation(run, capsys, monkeypatch):
    path, images = run
    lines = ["What is shown here?", "", "Is it big?", f"/image {images[2]}", "What is shown here?", "/reset",
             "/image missing.png", "What is shown here?", "/quit", "never read"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", str(path), "--image", images[0]]) == 0
    out = capsys.readouterr()
    chat = Chat.load(path)  # the same conversation through the library
    want = [chat.ask("What is shown here?", image=images[0]), chat.ask("Is it big?")]
    chat.reset(images[2])
    want += [chat.ask("What is shown here?")]
    chat.reset(images[2])
    want += [chat.ask("What is shown here?")]  # after /reset (the bad /image keeps the image)
    streamed = [ln.strip() for ln in out.out.splitlines() if not ln.startswith("[")]
    assert streamed == want  # each answer streamed as it is decoded, then a newline
    assert f"[image: {images[2]}]" in out.out and "[conversation reset]" in out.out
    assert "missing.png: image file not found" in out.err
