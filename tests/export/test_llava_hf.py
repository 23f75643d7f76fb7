"""``eim export --format llava-hf``: transformers serves the run, with no eim, and answers as ``eim chat`` does."""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from helpers import TEXTS, draw, llava_datasets, tiny_recipe

from eim.api import train
from eim.chat import Chat
from eim.cli import main
from eim.errors import EIMError
from eim.export import export
from eim.export.llava_hf import ExportError, check_exportable
from eim.io import load_tensors, write_json
from eim_harness.tiny import make_tiny_lm, make_tokenizer
from eim.recipe import load_recipe

QUESTIONS = ["What is shown here?", "Describe the image briefly.", "What is shown here?", "What color is it?"]

# What a user without eim runs: transformers' own classes on the exported folder, the processor's chat
# template, greedy generate. Runs under `python -I -S` with only site-packages on the path (no .pth
# files: the editable install's path to eim's sources is one), so `import eim` must fail.
CLEAN = r"""
import importlib.util, json, sys
sys.path.append(sys.argv[1])
assert importlib.util.find_spec("eim") is None, "eim is importable"
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration
model = LlavaForConditionalGeneration.from_pretrained(sys.argv[2]).eval()
processor = AutoProcessor.from_pretrained(sys.argv[2])
out = []
for image, turns in json.loads(sys.argv[3]):
    messages = []
    for i, (q, a) in enumerate(turns):
        content = [{"type": "image", "path": image}, {"type": "text", "text": q}] if i == 0 else q
        messages.append({"role": "user", "content": content})
        if a is not None:
            messages.append({"role": "assistant", "content": a})
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=int(sys.argv[4]), do_sample=False)
    out.append(processor.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
print(json.dumps(out))
"""


def _run(tiny_dir, root, name, lm, data):
    """A tiny ``name`` run (a LLaMA whose tokenizer adds BOS) that has learned to name the colour it
    sees: answers differ from image to image. ``llava_eim`` adds EIM's stages (loss_ST, loss_LM) and
    tunes CLIP by LoRA for loss_IE in its last stage."""
    over = {"lm.name_or_path": str(lm), "train.lr": 1e-2, "train.max_length": 64, "generation.max_new_tokens": 8}
    recipe = tiny_recipe(tiny_dir, name, lm="llama", overrides=over)
    for i, stage in enumerate(recipe.stages):
        over.update({f"stages.{i}.epochs": None, f"stages.{i}.steps": 150 if "base" in stage.losses else 10})
        if stage.lr is not None:
            over[f"stages.{i}.lr"] = 1e-2
    train(tiny_recipe(tiny_dir, name, lm="llama", overrides=over), None, root / name, datasets=data, quiet=True)
    return root / name


@pytest.fixture(scope="module")
def llava_run(tiny_dir, tmp_path_factory):
    """The tiny runs of ``llava`` and ``llava_eim`` on the same data, and non-square images to ask
    about (padded to squares by both eim and the exported processor)."""
    root = tmp_path_factory.mktemp("llava")
    lm = make_tiny_lm(root / "llama", make_tokenizer(TEXTS, 300, llama_specials=True), arch="llama")
    data = llava_datasets(root / "images", QUESTIONS[0])
    wide = [draw(root / f"wide{i}.png", c, s, size=(40, 26)) for i, (c, s) in enumerate([("red", "circle"), ("blue", "square")])]
    return {"root": root, "run": _run(tiny_dir, root, "llava", lm, data), "data": data,
            "eim_run": _run(tiny_dir, root, "llava_eim", lm, data),
            "images": [s.image for s in data["captions"]][::2] + wide}


def _chat(run, image, question, capsys):
    assert main(["chat", str(run), "--image", image, "--prompt", question, "--max-new-tokens", "8"]) == 0
    return capsys.readouterr().out.rstrip("\n").split("\n")[-1]


@pytest.mark.parametrize("which", ["run", "eim_run"], ids=["llava", "llava_eim"])
def test_exported_model_answers_as_eim_chat_without_eim(llava_run, which, tmp_path, capsys):
    run, out = llava_run[which], tmp_path / "exported"
    assert main(["export", str(run), "--format", "llava-hf", "--out", str(out)]) == 0
    assert "probe logits within" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "chat_template.jinja",
            "processor_config.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))  # safetensors and JSON only
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llava" and cfg["vision_feature_layer"] == -2
    assert cfg["vision_feature_select_strategy"] == "default" and cfg["image_seq_length"] == 16
    assert json.loads((out / "processor_config.json").read_text())["image_processor"]["do_pad"] is True

    images = llava_run["images"]
    cases = [(img, [("What is shown here?", None)]) for img in images]  # what it was trained to answer
    cases += [(img, [(q, None)]) for img, q in zip(images, QUESTIONS[1:])]  # and questions it never saw
    ours = [_chat(run, img, turns[0][0], capsys) for img, turns in cases]
    chat = Chat.load(run)  # a follow-up turn: the conversation so far in the template
    for img in images[:2]:
        first = chat.ask("What is shown here?", image=img)
        cases.append((img, [("What is shown here?", first), ("What color is it?", None)]))
        ours.append(chat.ask("What color is it?"))
    res = subprocess.run([sys.executable, "-I", "-S", "-c", CLEAN, sysconfig.get_paths()["purelib"], str(out),
                          json.dumps(cases), "8"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    theirs = json.loads(res.stdout.strip().splitlines()[-1])
    assert theirs == ours  # word for word, image by image
    trained = ours[: len(images)]
    assert all(trained) and len(set(trained)) > 1  # words, and answers that depend on the image


def test_chat_template_renders_what_eim_trains_with(llava_run, tmp_path):
    """The exported chat template (the processor's, and the tokenizer's, which vLLM reads) renders the
    run's last stage's template, vicuna_v1, exactly as eim renders it: a follow-up prompt, a whole
    conversation, and a system message in place of the system line."""
    from transformers import AutoProcessor, AutoTokenizer

    from eim.api import load_for_inference
    from eim.data.sample import Sample
    from eim.model.splice import TextEncoder

    out = tmp_path / "exported"
    export(llava_run["run"], out)
    processor, tokenizer = AutoProcessor.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    _, tok, _, recipe = load_for_inference(llava_run["run"])
    enc = TextEncoder.for_recipe(tok, recipe)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Describe it."}, {"type": "image"}]},
                {"role": "assistant", "content": "A red square."},
                {"role": "user", "content": [{"type": "text", "text": " Is it big?\n"}]}]
    follow_up = Sample(0, "x.png", "Describe it.", "A red square.", turns=[("Describe it.", "A red square."), ("Is it big?", "")])
    want = "<s>" + enc.render(follow_up, prompt=True)
    assert want == "<s>A chat. USER: <image>\nDescribe it. ASSISTANT: A red square.</s>USER: Is it big? ASSISTANT:"
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == want
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == want
    done = "<s>" + enc.render(Sample(0, "x.png", "Describe it.", "A red square."))  # the training sequence
    assert processor.apply_chat_template(messages[:2]) == done == "<s>A chat. USER: <image>\nDescribe it. ASSISTANT: A red square.</s>"
    system = processor.apply_chat_template([{"role": "system", "content": "Be brief."}] + messages[:2])
    assert system == "<s>Be brief. USER: <image>\nDescribe it. ASSISTANT: A red square.</s>"


def test_export_merges_lora_into_clip_exactly(llava_run, tiny_dir, tmp_path):
    """A run whose CLIP was tuned by LoRA exports as a plain LLaVA: peft merges it into the weights
    (the export's own probe compares the logits with eim's)."""
    over = {"lm.name_or_path": str(llava_run["root"] / "llama"), "vision.trainable": "lora", "train.lr": 1e-2,
            "stages.1.trainable": ["vision", "projector", "lm"]}
    for i in range(2):
        over.update({f"stages.{i}.epochs": None, f"stages.{i}.steps": 2})
    train(tiny_recipe(tiny_dir, "llava", lm="llama", overrides=over), None, tmp_path / "run", datasets=llava_run["data"], quiet=True)
    tensors = load_tensors(tmp_path / "run" / "stage-1-finetune" / "model.safetensors")[0]
    tuned = [t for k, t in tensors.items() if "lora_B" in k]
    assert tuned and any(t.abs().sum() > 0 for t in tuned)  # LoRA moved away from its zero start
    s = export(tmp_path / "run", tmp_path / "out")
    assert s["probe_max_logit_diff"] < 1e-4


def test_export_refuses_what_a_plain_llava_cannot_hold(tmp_path, capsys):
    """VPT prompts, adapters and EIM's post_layernorm features: refused with the reason, before any
    weight loads, and nothing is written."""
    with pytest.raises(ExportError, match="VPT prompts"):
        check_exportable(load_recipe("llava_eim", {"vision.trainable": "prompt"}))
    check_exportable(load_recipe("llava_eim"))  # CLIP tuned by LoRA: merged exactly
    with pytest.raises(ExportError, match="adapters"):
        check_exportable(load_recipe("lavin"))
    with pytest.raises(ExportError, match="feature_layer"):
        check_exportable(load_recipe("clipcap_eim"))
    check_exportable(load_recipe("llava"))
    run = tmp_path / "run"  # a finished llava_eim stage, as far as find_checkpoint can tell
    (run / "stage-0-st").mkdir(parents=True)
    write_json(load_recipe("llava_eim", {"vision.trainable": "prompt"}).to_dict(), run / "recipe.json")
    write_json({}, run / "stage-0-st" / "stage.json")
    (run / "stage-0-st" / "model.safetensors").write_bytes(b"")
    assert main(["export", str(run), "--format", "llava-hf", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot be exported as llava-hf" in err and "--vision.trainable lora" in err
    assert not (tmp_path / "out").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(EIMError, match="not empty"):
        export(run, tmp_path / "full")


def test_eim_is_not_importable_in_the_clean_python(tmp_path):
    """The check above would pass vacuously if the clean interpreter could still import eim."""
    res = subprocess.run([sys.executable, "-I", "-S", "-c",
                          "import sys; sys.path.append(sys.argv[1]); import eim", sysconfig.get_paths()["purelib"]],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode != 0 and "No module named 'eim'" in res.stderr
    assert Path(torch.__file__).is_relative_to(sysconfig.get_paths()["purelib"])  # torch comes from site-packages


def test_a_16bit_run_exports_checked_in_float32(llava_run, tiny_dir, tmp_path, capsys):
    """A run of bfloat16 CLIP and LLM weights (the real-size recipes' setting): the export is built and
    checked in float32, and written in the asked dtype, its config saying so throughout."""
    over = {"lm.name_or_path": str(llava_run["root"] / "llama"), "vision.dtype": "bfloat16", "lm.dtype": "bfloat16",
            **{f"stages.{i}.{k}": v for i in range(2) for k, v in (("epochs", None), ("steps", 1))}}
    run = tmp_path / "run"
    train(tiny_recipe(tiny_dir, "llava", lm="llama", overrides=over), None, run, datasets=llava_run["data"], quiet=True)
    for dtype in ("bfloat16", "float32"):
        out = tmp_path / dtype
        assert main(["export", str(run), "--format", "llava-hf", "--out", str(out), "--dtype", dtype]) == 0
        assert "probe logits within" in capsys.readouterr().out
        cfg = json.loads((out / "config.json").read_text())
        assert {cfg.get("dtype"), cfg["text_config"].get("dtype"), cfg["vision_config"].get("dtype")} == {dtype}
