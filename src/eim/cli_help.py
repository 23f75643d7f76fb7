"""How every ``eim`` parser's ``--help`` reads: plain text for a person at a terminal, no markup.

One short paragraph says what the command does; the options follow, each with its help line; an
``examples:`` section ends it, one command line per example (tests/test_readme.py runs each, or
parses it where it names a placeholder such as FILE). The harness's verbs use it too.
"""

import argparse
import textwrap


class HelpFormatter(argparse.HelpFormatter):
    """Wraps the description and the options' help to the terminal's width, never at a hyphen
    (llava-hf, not llava- / hf); keeps the ``examples:`` epilog's lines as written."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False)


def verb_help(description: str, *examples: str) -> dict:
    """The ``add_parser`` / ``ArgumentParser`` keywords of a verb's ``--help``: ``description``, one
    plain-text paragraph (no markup: it is wrapped to the terminal), and an ``examples:`` epilog with
    one command line (an optional ``# comment`` after it) per example."""
    return {"description": " ".join(description.split()),
            "epilog": "examples:\n" + "\n".join(f"  {e}" for e in examples),
            "formatter_class": HelpFormatter}
