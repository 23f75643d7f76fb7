"""Every ``--help`` is written for a person at a terminal (issue 31, item 7): plain text (no reST
markup), one short paragraph, the options each with its help line, then an ``examples:`` section
of command lines, which tests/test_readme.py runs (or parses, where they name a placeholder).

Checked on every parser: ``eim`` itself, every verb, every sub-verb (``eim data check``,
``eim banks build``, ``eim score coco``, ``eim runs show``, ...), and the verbs other packages add.
"""

import argparse
import re

import pytest

from eim.cli import build_parser

MARKUP = re.compile(r"``|:(mod|func|class|data|meth|attr|obj|ref|doc):`|`|\*\*|::\s*$", re.M)
EXAMPLE = re.compile(r"^  (eim|accelerate launch|torchrun) \S", re.M)


def _parsers():
    """(name, parser) of the eim parser and every sub-parser under it."""
    def walk(parser, name):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, p in action.choices.items():
                    yield from walk(p, f"{name} {sub}")
    return list(walk(build_parser("all"), "eim"))


PARSERS = dict(_parsers())


def test_every_verb_and_sub_verb_is_checked():
    assert {"eim", "eim train", "eim data check", "eim data shapes", "eim banks build", "eim score coco",
            "eim runs show", "eim study", "eim demo", "eim eval"} <= set(PARSERS)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_is_plain_text(name):
    text = PARSERS[name].format_help()
    bad = [m.group(0) for m in MARKUP.finditer(text)]
    assert not bad, f"{name} --help holds reST markup {bad}:\n{text}"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_description_is_one_short_paragraph(name):
    description = PARSERS[name].description or ""
    assert description.strip(), f"{name} --help says nothing about what it does"
    assert "\n\n" not in description.strip() and len(description) < 800, description


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_ends_with_examples(name):
    parser = PARSERS[name]
    epilog = parser.epilog or ""
    assert epilog.startswith("examples:"), f"{name} --help has no examples: section"
    examples = EXAMPLE.findall(epilog)
    assert "eim" in examples and len(examples) == len(epilog.splitlines()) - 1, epilog
    text = parser.format_help()
    assert text.rstrip().endswith(epilog.splitlines()[-1]), "the examples keep their lines as written"
    if parser.get_default("func"):  # a leaf verb: its examples are of itself
        words = name.split()
        assert any(ln.split()[:len(words)] == words or "-m eim.cli " + " ".join(words[1:]) in ln
                   for ln in epilog.splitlines()[1:]), f"{name}'s examples do not run {name}:\n{epilog}"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_and_action_has_a_help_line(name):
    missing = []
    for action in PARSERS[name]._actions:
        if isinstance(action, argparse._SubParsersAction):
            missing += [a.dest for a in action._choices_actions if not a.help]
        elif not action.help:
            missing.append("/".join(action.option_strings) or action.dest)
    assert not missing, f"{name}: no help for {missing}"


@pytest.mark.parametrize("columns", [50, 70, 80, 100, 160])
def test_only_the_examples_start_a_line_with_a_command(columns, monkeypatch):
    """tests/test_readme.py runs every help line that starts with ``eim``: a sentence naming a
    command must not wrap so that one of its lines does, at any terminal width."""
    monkeypatch.setenv("COLUMNS", str(columns))
    for name, parser in _parsers():
        body = parser.format_help().split("\nexamples:\n")[0]
        stray = [ln for ln in body.splitlines() if re.match(r"^\s+(eim|accelerate|torchrun) ", ln)]
        assert not stray, f"{name} --help at {columns} columns: {stray}"
