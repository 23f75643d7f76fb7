"""The command line (eim.cli): every verb loads its own parser; the rest are listed by name."""

import pytest

from eim.cli import build_parser, commands, main


@pytest.mark.parametrize("verb", sorted(commands()))
def test_every_verb_has_its_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    assert f"usage: eim {verb}" in capsys.readouterr().out


def test_top_level_help_lists_every_verb(capsys):
    assert main([]) == 1
    out = capsys.readouterr().out
    assert all(verb in out for verb in commands())
    assert set(build_parser("all")._subparsers._group_actions[0].choices) == set(commands())
