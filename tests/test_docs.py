"""The documents a user reads: README.md stays a five-minute read (at most 220 lines), and every
relative link in README.md, CHANGELOG.md and docs/*.md points at a file that exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_is_at_most_220_lines():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 220, f"README.md has {n} lines; move detail into the page that owns it (docs/index.md)"


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_pages_the_readme_names_exist_and_are_linked():
    readme = (ROOT / "README.md").read_text()
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    for page in ("docs/index.md", "docs/evidence.md", "docs/design.md", "docs/scaling.md", "LICENSE"):
        assert f"({page})" in readme, page
    index = (ROOT / "docs" / "index.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert page.name == "index.md" or f"({page.name})" in index, f"docs/index.md does not list {page.name}"
