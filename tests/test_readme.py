"""Every command line README.md and the ``--help`` texts show is checked here, so the docs stay true
(issue 18, item 1). Lines are extracted, not copied: a new example is checked the day it is written.

What is extracted: README's inline code spans and code blocks, and every ``eim ...`` line or
span of every ``--help`` text (every verb and sub-verb), that start with ``eim``, ``make``,
``accelerate launch``, ``torchrun`` or ``-m eim.cli``; ``a | b | c`` alternatives become one line
each. How each is checked:

- **run** — every concrete ``eim`` line: executed by ``eim.cli.main`` in a sandbox folder, must
  exit 0. Substitutions, so they run offline in seconds: ``D/``, ``DATA/``, ``data/shapes/``,
  ``data/coco`` ... name one tiny generated world (``eim data shapes --train 20 --val 4 --test 8
  --size 32``); ``/models/clip...`` and ``/models/gpt2`` are tiny models (conftest's CLIP, a tiny
  GPT-2 with room for ScienceQA prompts); ``eim train`` / ``eim banks build`` / ``eim data tokens`` lines that name no
  model get ``--vision.name_or_path``/``--lm.name_or_path`` of those tiny models appended (the
  recipes' hub ids cannot be downloaded here) and write into a fresh ``runs<i>/`` folder each;
  the run folders ``eim eval`` reads (``runs/clipcap``, ``runs/lavin``) are tiny ClipCap runs
  trained first; ``eim data shapes --out X`` writes ``new<i>/X`` instead (beside the world the
  other lines read); ``/tmp/s`` is a sandbox folder. The README's Python example is executed
  with the same substitutions.
- **parse** — long runs (``eim demo`` with a preset other than ``test``, ``eim study``; ``make
  demo``/``make test``): the eim parser accepts the line (``make -n`` the target).
- **launch** — multi-process lines (``accelerate launch ...``, ``torchrun ...``): accelerate's and
  torchrun's own parsers accept their part, the ``--config_file`` exists, and the eim part after
  ``-m eim.cli`` is parsed as above.
- **synopsis** — lines with placeholders (``RECIPE``, ``PATH``, ``[--resume | --overwrite]``,
  ``{coco,scienceqa,mme}``): filled with sample values and parsed, overrides included (a
  ``--train.lr 1e-4`` in a synopsis is loaded into the recipe).
- **name** — a bare ``eim VERB``: the verb exists.
"""

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from eim.cli import build_parser, commands, main
from eim.recipe import load_recipe, parse_overrides
from eim_harness.tiny import make_tiny_lm

ROOT = Path(__file__).resolve().parents[1]
STARTS = ("eim ", "make ", "accelerate launch", "torchrun ", "-m eim.cli")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*(\.\.\.)?$")
SAMPLES = {"RECIPE": "clipcap", "PATH": "data/coco", "RUN": "runs/x", "RUN_DIR": "runs/x", "DIR": "out",
           "CHECKPOINT": "runs/clipcap", "IMAGE": "img.png", "N": "2", "D": "out", "ID": "1", "QID": "1",
           "FILE": "x.json", "TEXT": ".", "DATA": "data", "NAME": "clipcap", "SPEC": "clipcap-t4", "P": "test",
           "C": "transfer", "SPLIT": "val"}


# --- extraction ---------------------------------------------------------------------------------
def _clean(text):
    return re.sub(r"\s+", " ", text.replace("\\|", "|")).strip()


def _alternatives(line):
    """``eim params a | b | c --json`` -> one line per alternative (a synopsis's ``[a | b]`` stays)."""
    m = re.search(r"(\S+)((?: \| \S+)+)", line)
    if not m or re.search(r"[\[\]]", line):
        return [line]
    alts = [m.group(1)] + m.group(2).split(" | ")[1:]
    return [line[: m.start()] + a + line[m.end():] for a in alts]


def _commands(spans):
    out = []
    for s in map(_clean, spans):
        s = re.sub(r"\s+#.*$", "", s)  # a trailing shell comment
        if s.startswith(STARTS):
            out += _alternatives(s)
    return out


def readme():
    """(command lines, python blocks) of README.md."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, re.S)
    python = [b for lang, b in blocks if lang == "python"]
    lines = [ln for lang, b in blocks if lang in ("bash", "sh", "") for ln in b.replace("\\\n", " ").splitlines()]
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return _commands(re.findall(r"`([^`]+)`", text) + lines), python


def parsers():
    """(name, parser) of the eim parser and every sub-parser under it."""
    def walk(parser, name):
        yield name, parser
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for sub, p in action.choices.items():
                    yield from walk(p, f"{name} {sub}")
    return list(walk(build_parser("all"), "eim"))


def help_lines():
    out = []
    for _, parser in parsers():
        text = parser.format_help()
        spans = re.findall(r"``(.+?)``", text, re.S) + re.findall(r"(?<!`)`([^`]+)`(?!`)", text)
        spans += [ln for ln in text.splitlines() if re.match(r"^\s+(eim|accelerate|torchrun) ", ln)]
        out += _commands(spans)
    return out


README_LINES, README_PYTHON = readme()
HELP_LINES = help_lines()
PARSERS = dict(parsers())
LINES = sorted(set(README_LINES + HELP_LINES))


def kind(line):
    words = shlex.split(line)
    if line.startswith("make "):
        return "parse"
    if line.startswith(("accelerate ", "torchrun ", "-m eim.cli")):
        return "launch"
    if words[0] == "eim" and " ".join(w for w in words if not w.startswith("--")) in PARSERS:
        return "name"  # a reference to a verb (and its flags) inside a sentence
    if any(PLACEHOLDER.match(w) for w in words) or re.search(r"[\[\]{}|]|\.\.\.", line):
        return "synopsis"
    if words[:2] == ["eim", "demo"] and "test" not in words:
        return "parse"  # minutes to an hour each (README gives the times)
    if words[:2] == ["eim", "study"] and "--list" not in words:
        return "parse"  # a study is hours (tests/harness/test_study.py runs one at the test preset)
    return "run"


def test_the_docs_show_commands_of_every_kind():
    kinds = {k: [ln for ln in LINES if kind(ln) == k] for k in ("run", "parse", "launch", "synopsis", "name")}
    assert all(kinds.values()), kinds
    assert any("--train.lr 1e-4" in ln for ln in kinds["run"])  # the README's override example runs
    assert len(README_PYTHON) == 2 and any(ln.startswith("eim eval runs/") for ln in HELP_LINES)


# --- checks -------------------------------------------------------------------------------------
def fill(line):
    """A synopsis with sample values: ``[a | b]`` -> a, ``{x,y}`` -> x, ``IMAGE...`` -> a path."""
    line = re.sub(r"\[([^\[\]]*)\]", lambda m: m.group(1).split("|")[0].strip(), line)
    line = re.sub(r"\{([^{}]*)\}", lambda m: m.group(1).split(",")[0], line)
    line = re.sub(r"(\S+)\|\S+", r"\1", line).replace(" ...", "")
    return " ".join(SAMPLES.get(w.rstrip("."), w) if PLACEHOLDER.match(w) else w for w in line.split())


def parse_eim(argv):
    """What ``eim.cli.main`` would accept, without running it: options, overrides, the recipe."""
    parser = build_parser(argv[0] if argv else None)
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            args, extra = parser.parse_known_args(argv)
    except SystemExit:
        pytest.fail(f"eim {' '.join(argv)}: {err.getvalue().strip()}")
    assert getattr(args, "func", None), argv
    if extra:
        assert getattr(args, "allow_overrides", False), f"unrecognized arguments: {extra}"
        overrides = parse_overrides(extra)
        if getattr(args, "recipe", None):
            load_recipe(args.recipe, overrides)
    return args


def check_launch(line):
    words = shlex.split(fill(line))
    if "-m" in words:
        at = words.index("-m")
        launcher, eim_args = words[:at], words[at + 2:]
    else:
        launcher, eim_args = words, []
    if launcher[:2] == ["accelerate", "launch"]:
        from accelerate.commands.launch import launch_command_parser

        launch_command_parser().parse_args(launcher[2:] + ["-m", "eim.cli"] + eim_args)
        if "--config_file" in launcher:
            cfg = launcher[launcher.index("--config_file") + 1]
            shipped = re.fullmatch(r"\$\(eim accelerate-config (\w+)\)", cfg)  # what the command prints
            if shipped:
                from eim.commands.accelerate_config import config_path

                cfg = str(config_path(shipped.group(1)))
            assert (ROOT / cfg).is_file() or (ROOT / "src" / cfg).is_file(), cfg
    elif launcher[:1] == ["torchrun"]:
        from torch.distributed.run import get_args_parser

        get_args_parser().parse_args(launcher[1:] + ["-m", "eim.cli"] + eim_args)
    if eim_args:
        parse_eim(eim_args)


@pytest.mark.parametrize("line", [ln for ln in LINES if kind(ln) in ("synopsis", "parse", "launch", "name")])
def test_line_parses(line):
    k = kind(line)
    if k == "name":
        words = line.split()[1:]
        assert words[0] in commands(), line
        parser = PARSERS["eim " + " ".join(w for w in words if not w.startswith("--"))]
        flags = {o for a in parser._actions for o in a.option_strings}
        assert all(w in flags for w in words if w.startswith("--")), line
    elif k == "launch":
        check_launch(line)
    elif line.startswith("make "):
        res = subprocess.run(["make", "-n", *line.split()[1:]], cwd=ROOT, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    elif line.endswith(" ..."):  # "eim score {coco,scienceqa,mme} ...": each verb exists
        for verb in re.findall(r"\{([^{}]*)\}", line)[0].split(","):
            assert f"{line.split('{')[0].strip()} {verb}" in PARSERS
    else:
        parse_eim(shlex.split(fill(line))[1:])


# --- running ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sandbox(tiny_dir, tmp_path_factory):
    """A folder where the docs' paths exist: the tiny world, tiny models, runs to evaluate."""
    box = tmp_path_factory.mktemp("readme")
    world = box / "world"
    assert main(["data", "shapes", "--out", str(world), "--train", "20", "--val", "4", "--test", "8",
                 "--size", "32"]) == 0
    for name in ("D", "DATA"):
        (box / name).symlink_to(world)
    (box / "data").mkdir()
    for name, target in (("shapes", world), ("coco", world / "coco"), ("scienceqa", world / "scienceqa"),
                         ("MME", world / "mme")):
        (box / "data" / name).symlink_to(target)
    gpt2 = make_tiny_lm(box / "models" / "gpt2", AutoTokenizer.from_pretrained(tiny_dir / "gpt2"), max_positions=512)
    models = {"clip": str(tiny_dir / "clip"), "gpt2": str(gpt2)}
    subs = {"/models/clip-vit-base-patch32": models["clip"], "/models/clip": models["clip"],
            "/models/gpt2": models["gpt2"], "/tmp/s": str(box / "tmp_s")}
    for run in ("clipcap", "lavin"):  # what the eval examples evaluate
        assert main(["train", "clipcap", "--data", str(world / "coco"), "--out", str(box / "runs" / run), "--quiet",
                     "--vision.name_or_path", models["clip"], "--lm.name_or_path", models["gpt2"],
                     "--stages.0.epochs", "none", "--stages.0.steps", "2", "--generation.num_beams", "2",
                     "--generation.max_new_tokens", "8"]) == 0
    # what the chat and export examples read: a LLaVA run on a LLaMA (LLaVA holds LLaMA-family LLMs)
    assert main(["train", "llava", "--data", f"captions={world / 'coco'}", "--data",
                 f"instruct={world / 'llava' / 'instruct.json'}", "--out", str(box / "runs" / "llava"), "--quiet",
                 "--vision.name_or_path", models["clip"], "--lm.name_or_path", str(tiny_dir / "llama"),
                 "--stages.0.epochs", "none", "--stages.0.steps", "1", "--stages.1.epochs", "none",
                 "--stages.1.steps", "1", "--generation.max_new_tokens", "4"]) == 0
    return {"box": box, "models": models, "subs": subs}


def concrete(line, i, sb):
    """The line as the sandbox runs it (the substitutions of the module docstring)."""
    for a, b in sb["subs"].items():
        line = line.replace(a, b)
    argv = shlex.split(line)[1:]
    if argv[:2] == ["data", "shapes"]:  # a new world, beside the one the other lines read
        at = argv.index("--out") + 1
        argv[at] = f"new{i}/{argv[at].lstrip('/')}"
    if argv[0] in ("train", "banks") or argv[:2] == ["data", "tokens"]:
        argv = [a.replace("runs/", f"runs{i}/") for a in argv]
        if "--vision.name_or_path" not in argv:
            argv += ["--vision.name_or_path", sb["models"]["clip"]]
        if "--lm.name_or_path" not in argv:
            argv += ["--lm.name_or_path", sb["models"]["gpt2"]]
    return argv


RUN = [ln for ln in LINES if kind(ln) == "run"]


@pytest.mark.parametrize("line", RUN)
def test_line_runs(line, sandbox, capsys):
    if " --task coco " in f" {line} " and shutil.which("java") is None:
        pytest.skip("COCO scoring needs java")
    argv = concrete(line, RUN.index(line), sandbox)
    old = os.getcwd()
    os.chdir(sandbox["box"])
    try:
        rc = main(argv)
    finally:
        os.chdir(old)
    captured = capsys.readouterr()
    assert rc == 0, f"{line}\n-> eim {' '.join(argv)}\n{captured.err[-3000:]}"


def test_readme_python_example_runs(sandbox):
    code = next(b for b in README_PYTHON if "eim.train(" in b)
    subs = {**sandbox["subs"], "DATA/coco": str(sandbox["box"] / "world" / "coco"),
            '"runs/eim"': repr(str(sandbox["box"] / "runs-python" / "eim"))}
    for a, b in subs.items():
        code = code.replace(a, b)
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["recipe"].name == "clipcap_eim" and namespace["model"] is not None


def test_readme_transformers_example_loads_the_export(sandbox, tmp_path):
    """The export's three lines: transformers alone loads what `eim export` wrote."""
    code = next(b for b in README_PYTHON if "LlavaForConditionalGeneration" in b)
    assert main(["export", str(sandbox["box"] / "runs" / "llava"), "--format", "llava-hf", "--out", str(tmp_path / "x")]) == 0
    namespace = {}
    exec(compile(code.replace('"llava-exported"', repr(str(tmp_path / "x"))), "README.md", "exec"), namespace)
    assert type(namespace["model"]).__name__ == "LlavaForConditionalGeneration"
    assert namespace["processor"].image_token == "<image>"
