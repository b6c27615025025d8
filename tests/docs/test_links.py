"""Every link between the repository's Markdown pages leads somewhere: each relative link names a file or folder
that is in the repository, and each `#anchor` a heading of the page it points to, as GitHub makes the anchor.

The front page keeps its promise of being short, too (issue 24: read in five minutes, the depth one link away).
"""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# [text](target) and [text]: target, outside code. Images (![...]) are links too.
INLINE = re.compile(r"\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
FENCE = re.compile(r"^(\s*)(```|~~~).*?^\1\2\s*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def markdown_pages(root: Path) -> list[Path]:
    """The Markdown files git tracks or would add (not the ignored ones, such as target/ or .venv/)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "*.md"],
                            cwd=root, capture_output=True, check=True, text=True).stdout
    return sorted(root / p for p in listed.split("\0") if p and (root / p).is_file())


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: the text without markup, lower case, punctuation other than `-` and
    `_` dropped, each space a `-` (github/cmark-gfm's anchor filter)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").replace("*", "")
    text = text.lower()
    text = "".join(c for c in text if c.isalnum() or c in "-_ " or not c.isascii() and c.isalpha())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = github_anchor(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def broken_links(root: Path) -> list[str]:
    problems = []
    for page in markdown_pages(root):
        text = prose(page.read_text())
        for target in INLINE.findall(text) + REFERENCE.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not checked offline
                continue
            path_part, _, anchor = target.partition("#")
            where = f"{page.relative_to(root)}: {target}"
            linked = (page.parent / path_part).resolve() if path_part else page
            if path_part.startswith("/"):
                problems.append(f"{where}: absolute (GitHub resolves it against the site, not the repository)")
                continue
            if not linked.exists():
                problems.append(f"{where}: no such file")
                continue
            if root.resolve() not in [linked, *linked.parents]:
                problems.append(f"{where}: outside the repository")
                continue
            if anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
                problems.append(f"{where}: no heading with that anchor")
    return problems


def test_every_relative_link_and_anchor_resolves():
    assert broken_links(ROOT) == []


def test_the_front_page_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines: move depth next to the code it explains"


@pytest.mark.parametrize("heading,anchor", [
    ("When Aurora …", "when-aurora-"),
    ("The VPC on one machine (`tests/vpc`)", "the-vpc-on-one-machine-testsvpc"),
    ("Which program do I deploy?", "which-program-do-i-deploy"),
    ("Faithful, and not", "faithful-and-not"),
    ("Reliability and security under load (`tests/reliability`)",
     "reliability-and-security-under-load-testsreliability"),
])
def test_anchors_are_made_as_github_makes_them(heading, anchor):
    assert github_anchor(heading) == anchor


def test_the_checker_bites(tmp_path):
    (tmp_path / "elsewhere.md").write_text("# Elsewhere\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "docs").mkdir()
    (repo / "docs" / "guide.md").write_text("# Guide\n\n## Tear down\n\n## Tear down\n\n```\n## not a heading\n```\n")
    (repo / "README.md").write_text(
        "[ok](docs/guide.md#tear-down) [second](docs/guide.md#tear-down-1) [folder](docs) [web](https://x.test/y)\n"
        "`[code](nowhere.md)`\n\n```\n[fenced](nowhere.md)\n```\n"
        "[dead](docs/missing.md) [anchor](docs/guide.md#teardown) [fenced heading](docs/guide.md#not-a-heading)\n"
        "[root](/docs/guide.md) [out](../elsewhere.md)\n\n[ref]: docs/gone.md\n")
    assert broken_links(repo) == [
        "README.md: docs/missing.md: no such file",
        "README.md: docs/guide.md#teardown: no heading with that anchor",
        "README.md: docs/guide.md#not-a-heading: no heading with that anchor",
        "README.md: /docs/guide.md: absolute (GitHub resolves it against the site, not the repository)",
        "README.md: ../elsewhere.md: outside the repository",
        "README.md: docs/gone.md: no such file",
    ]
