"""The README and docs/: every relative link and image resolves, anchors name headings, the README stays short."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 150

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\]\n]|\](?!\())*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML = re.compile(r"<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"", re.I)


def _prose(text: str) -> str:
    # a link written inside code (a fence or `...`) is an example, not a link
    return _CODE.sub("", _FENCE.sub("", text))


def slugs(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """Every relative link or image of `page` that does not resolve from its folder, with why."""
    text = page.read_text(encoding="utf-8")
    prose = _prose(text)
    problems = []
    for target in _LINK.findall(prose) + _HTML.findall(prose):
        if not target or re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ... skipped
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.exists():
            problems.append(f"{target}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and dest.is_file():
            if anchor.lower() not in slugs(dest.read_text(encoding="utf-8")):
                problems.append(f"{target}: no heading #{anchor} in {dest.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_links_resolve(page):
    assert broken_links(page) == []


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_every_docs_page_is_linked_from_the_readme():
    readme = _prose((REPO / "README.md").read_text(encoding="utf-8"))
    linked = {(REPO / t.partition("#")[0]).resolve() for t in _LINK.findall(readme)}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []


def test_readme_gives_the_two_commands_that_exist():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for command in ("scripts/repro.sh", "scripts/test.sh"):
        assert re.search(rf"^{re.escape(command)}\s", readme, re.M), command
        assert (REPO / command).is_file()
    assert "exec scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_checker_finds_broken_links_and_anchors(tmp_path):
    """The check bites: a missing file, a missing image and a missing heading are each reported; code is not."""
    (tmp_path / "other.md").write_text("# Other page\n\n## A section: with punctuation\n")
    (tmp_path / "fig.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md) [ok anchor](other.md#a-section-with-punctuation) ![ok](fig.png)\n"
                    "[self](#page) [web](https://example.org/missing.md)\n"
                    "[gone](missing.md) ![gone](figs/none.png) [bad anchor](other.md#nowhere) [bad self](#nope)\n"
                    "`[code](not-a-link.md)`\n\n```\n[fenced](also-not.md)\n```\n")
    problems = broken_links(page)
    assert [p.split(":")[0] for p in problems] == ["missing.md", "figs/none.png", "other.md#nowhere", "#nope"]
