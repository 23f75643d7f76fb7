"""The layout rules of the two packages, checked on the source so they stay true.

- the library (``src/eim/``) never imports the research harness (``src/eim_harness/``), nor names
  it at all: the harness's verbs reach the CLI through the ``eim.cli`` entry point; nothing under
  ``eim/`` but ``cli.py`` and ``commands/`` imports ``eim.commands``;
- no import circle; an import inside a function says why on its line (an optional or heavy
  dependency);
- no source file over 400 lines;
- every ``docs/design.md §n`` a docstring cites exists;
- tests mirror the packages: ``tests/<package>/test_<module>.py`` tests ``eim/<package>/<module>.py``,
  ``tests/harness/test_<module>.py`` tests ``eim_harness/<module>.py``.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "eim"
HARNESS = ROOT / "src" / "eim_harness"
PACKAGES = ("eim", "eim_harness")
MAX_LINES = 400


def _modules():
    """{dotted module name: path} of every source file of both packages."""
    out = {}
    for src in (SRC, HARNESS):
        for p in sorted(src.rglob("*.py")):
            parts = p.relative_to(src.parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


MODULES = _modules()


def _resolve(name):
    """The package module an imported name lives in (``eim.losses.bank_infonce`` -> ``eim.losses``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path):
    """[(imported eim module, line number, at module top?)] of one file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for n in tree.body:  # a try/except at module top (an optional import) counts as top level
        if isinstance(n, ast.Try):
            top |= {id(x) for x in ast.walk(n)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n.split(".")[0] in PACKAGES:
                out.append((_resolve(n), node.lineno, id(node) in top))
            else:
                out.append((None, node.lineno, id(node) in top))
    return out


def test_the_library_never_imports_the_harness_and_only_the_cli_imports_commands():
    bad = []
    for name, path in MODULES.items():
        library = name == "eim" or name.startswith("eim.")
        for target, line, _ in _imports(path):
            if not target:
                continue
            if target.startswith("eim.commands") and not (name == "eim.cli" or name.startswith("eim.commands")):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
            if library and target.split(".")[0] == "eim_harness":
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
        if library and "eim_harness" in path.read_text():  # not even by name (importlib, a string)
            bad.append(f"{path.relative_to(ROOT)} names eim_harness")
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    graph = {name: {t for t, _, _ in _imports(path) if t and t != name} for name, path in MODULES.items()}
    # a package's __init__ re-exporting its submodules is not a circle with them
    for name in graph:
        graph[name] = {t for t in graph[name] if not (name.startswith(t + ".") and MODULES[t].name == "__init__.py")}
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = "open"
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            elif m not in state:
                visit(m, stack + [m])
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_imports_inside_functions_say_why():
    bad = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for _, line, top in _imports(path):
            if not top and "#" not in lines[line - 1]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {lines[line - 1].strip()}")
    assert not bad, "imports inside functions without a reason on their line:\n" + "\n".join(bad)


def test_no_source_file_over_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_design_citations_exist():
    design = (ROOT / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^##+ (\d+(?:\.\d+)?)[. ]", design, re.M))
    cited = {}
    for p in [*SRC.rglob("*.py"), *SRC.rglob("*.yaml"), *HARNESS.rglob("*.py"), *HARNESS.rglob("*.yaml")]:
        for s in re.findall(r"docs/design\.md §(\d+(?:\.\d+)?)", p.read_text()):
            cited.setdefault(s, str(p.relative_to(ROOT)))
    assert cited, "no docstring cites docs/design.md"
    missing = {s: f for s, f in cited.items() if s not in sections}
    assert not missing, f"cited sections missing from docs/design.md: {missing}"
    assert "DESIGN §" not in "".join(p.read_text() for p in SRC.rglob("*.py"))


PROJECT_TESTS = {"test_layout.py", "test_readme.py", "test_benchmarks.py", "test_docs.py", "test_real_scale.py"}  # of the whole project, not of one module


def test_tests_mirror_the_package():
    """Each tests/<pkg>/test_<module>[_<aspect>].py names a module (or package) of eim/<pkg>/, and
    each tests/harness/test_<module>[_<aspect>].py one of eim_harness/."""
    bad = []
    for t in sorted((ROOT / "tests").rglob("test_*.py")):
        rel = t.relative_to(ROOT / "tests")
        if len(rel.parts) == 1 and rel.name in PROJECT_TESTS:
            continue
        harness = rel.parts[0] == "harness"
        folder = HARNESS.joinpath(*rel.parts[1:-1]) if harness else SRC.joinpath(*rel.parts[:-1])
        words = rel.stem[len("test_"):].split("_")
        found = any((folder / ("_".join(words[:k]) + ".py")).is_file() or (folder / "_".join(words[:k])).is_dir()
                    for k in range(len(words), 0, -1))
        if not found:
            root = HARNESS if harness else SRC
            bad.append(f"{rel}: no module {root.name}/{folder.relative_to(root) / rel.stem[len('test_'):]}")
    assert not bad, "\n".join(bad)
