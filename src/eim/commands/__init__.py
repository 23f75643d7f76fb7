"""The verbs of ``eim``'s command line, one module each (``add_parser(subparsers)``), and the verbs
other installed packages add through the ``eim.cli`` entry point group.

A package registers a module (light: tables only) whose ``VERBS`` and ``DATA_ACTIONS`` map a name to
``(module, one-line help)``; ``eim`` lists them beside its own and imports a verb's module only when
it runs. The research harness adds ``eim demo``, ``eim study`` and ``eim data shapes`` this way, so
the library never imports it.
"""

from importlib.metadata import entry_points

GROUP = "eim.cli"


def plugin_table(table: str) -> dict[str, tuple[str, str]]:
    """``{name: (module, help)}`` from the ``table`` attribute (``VERBS`` or ``DATA_ACTIONS``) of every
    module registered in the ``eim.cli`` entry point group, in name order."""
    out: dict[str, tuple[str, str]] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        out.update(getattr(ep.load(), table, {}))
    return out
