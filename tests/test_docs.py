"""Links into the docs resolve: every `docs/PAGE.md#anchor` named in the code, and every Markdown
link of the README and docs, points at a page that exists and a heading it has. The reading path
states each file's size as it is."""

import re
from pathlib import Path

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CODE = sorted({*REPO.glob("*.py"), *REPO.glob("gptjax/**/*.py"), *REPO.glob("configs/*.py"),
               *REPO.glob("benchmarks/*"), *REPO.glob("tests/*.py"), REPO / "pyproject.toml"} - {Path(__file__)})
# A link named in code: docs/PAGE.md#anchor, up to the first character an anchor cannot hold.
CODE_LINK = re.compile(r"docs/([\w.-]+\.md)#([\w-]+)")
# A Markdown link with a target that is a local file: [text](path#anchor), path relative to the page.
MARKDOWN_LINK = re.compile(r"\]\((?!https?:)([^)\s#]*)(?:#([^)\s]+))?\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation removed, spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (those outside code blocks), numbered as GitHub numbers repeats."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        anchor, n = github_anchor(heading), 1
        while anchor in found:
            anchor, n = f"{github_anchor(heading)}-{n}", n + 1
        found.add(anchor)
    return found


def links() -> list[tuple[str, Path, str | None]]:
    """(where, page, anchor) for every link into the docs: the code's, then the pages' own."""
    found = []
    for path in CODE:
        if path.is_file():
            for page, anchor in CODE_LINK.findall(path.read_text(encoding="utf-8")):
                found.append((str(path.relative_to(REPO)), REPO / "docs" / page, anchor))
    for path in PAGES:
        for target, anchor in MARKDOWN_LINK.findall(path.read_text(encoding="utf-8")):
            found.append((str(path.relative_to(REPO)), (path.parent / target).resolve() if target else path,
                          anchor or None))
    return found


LINKS = links()


def test_the_code_links_into_the_docs():
    assert sum(where.endswith(".py") for where, _, _ in LINKS) >= 10


@pytest.mark.parametrize("where, page, anchor", LINKS,
                         ids=[f"{where}->{page.name}#{anchor}" for where, page, anchor in LINKS])
def test_link_resolves(where, page, anchor):
    assert page.exists(), f"{where} links to {page}, which does not exist"
    if anchor and page.suffix == ".md":
        assert anchor in anchors(page), f"{where} links to {page.name}#{anchor}: no such heading"


def test_github_anchor():
    assert github_anchor("Sampling with a key/value cache") == "sampling-with-a-keyvalue-cache"
    assert github_anchor("Linear layers as 2-D products") == "linear-layers-as-2-d-products"
    assert github_anchor("GPT-2 in Hugging Face's format") == "gpt-2-in-hugging-faces-format"


def test_reading_path_sizes_are_current():
    text = (REPO / "docs" / "reading.md").read_text(encoding="utf-8")
    stated = re.findall(r"\*\*`([\w/]+\.py)`\*\* \(about (\d+) lines\)", text)
    assert len(stated) >= 8
    for name, lines in stated:
        actual = len((REPO / name).read_text(encoding="utf-8").splitlines())
        assert abs(actual - int(lines)) <= max(15, 0.15 * actual), f"{name}: said to be {lines} lines, it has {actual}"
