"""``eim accelerate-config [NAME]``: where the accelerate configs eim ships are, after ``pip install``
too (docs/design.md §9), so a launch line names one wherever eim is installed::

    accelerate launch --config_file "$(eim accelerate-config deepspeed_zero3)" -m eim.cli train llava_eim ...
"""

from pathlib import Path

from eim.cli_help import verb_help
from eim.errors import EIMError

FOLDER = Path(__file__).resolve().parents[1] / "accelerate_configs"


def shipped() -> dict[str, Path]:
    """``{name: path}`` of the shipped accelerate configs (``deepspeed_zero3`` -> its YAML file)."""
    return {p.stem: p for p in sorted(FOLDER.glob("*.yaml"))}


def config_path(name: str) -> Path:
    """The path of the shipped config ``name`` (with or without ``.yaml``)."""
    configs = shipped()
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if stem not in configs:
        raise EIMError(f"no shipped accelerate config {name!r} (shipped: {', '.join(configs)})")
    return configs[stem]


def add_parser(sub):
    p = sub.add_parser("accelerate-config", help="where the shipped launch configs are (DDP, FSDP, DeepSpeed ZeRO-2/3)",
                       **verb_help(
        "Print where the accelerate configs that eim ships are installed, so accelerate launch can name one "
        "in a source checkout and after pip install alike: with a NAME, its path alone (for $(...) in a "
        "shell line); without, every config with its path. Each file's comments say what it sets; a launch "
        "may override its process count (--num_processes) and precision (--mixed_precision).",
        "eim accelerate-config",
        "eim accelerate-config deepspeed_zero3",
        'accelerate launch --config_file "$(eim accelerate-config ddp)" --num_processes 2 -m eim.cli train clipcap_eim '
        "--data data/coco --out runs/ddp"))
    p.add_argument("name", nargs="?", help="a config's name (ddp, fsdp, deepspeed_zero2, deepspeed_zero3, single_gpu)")
    p.set_defaults(func=run)


def run(args):
    if args.name:
        print(config_path(args.name))
        return 0
    for name, path in shipped().items():
        print(f"{name:<18}{path}")
    return 0
