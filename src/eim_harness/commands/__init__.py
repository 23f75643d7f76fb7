"""The harness's command-line verbs, registered with ``eim``'s command line through the ``eim.cli``
entry point (``pyproject.toml``), so the library's CLI lists them without importing the harness.

:data:`VERBS` are top-level verbs (``eim demo``, ``eim study``); :data:`DATA_ACTIONS` are actions of
``eim data`` (``eim data shapes``). Each maps a name to ``(module, one-line help)``; the module has
``add_parser(subparsers)`` (a verb) or ``add_action(subparsers)`` (a data action), imported only
when that verb runs. This module stays import-free so that ``eim --help`` stays instant.
"""

VERBS = {
    "demo": ("eim_harness.commands.demo",
             "run baseline vs EIM end to end, offline (ClipCap, or LaVIN/LLaVA with --task)"),
    "study": ("eim_harness.commands.study", "run an ablation study with confidence intervals (eim study --list)"),
}
DATA_ACTIONS = {
    "shapes": ("eim_harness.commands.shapes", "write the synthetic shapes world in the real formats"),
}
