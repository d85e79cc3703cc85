"""Every ```python block in README.md and docs/*.md runs as written."""

import re

import pytest
from conftest import REPO, run_program

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = [(page.relative_to(REPO), index, code) for page in PAGES
          for index, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S))]


def test_readme_has_python_examples():
    assert any(page.name == "README.md" for page, _, _ in BLOCKS)


@pytest.mark.parametrize("page, index, code", BLOCKS, ids=[f"{page}-{index}" for page, index, _ in BLOCKS])
def test_python_block_runs(page, index, code, tmp_path):
    # in a fresh Python outside the clone, with XLA's own defaults (not the tests' flags): as a user runs it
    result = run_program(["-c", code], env={"XLA_FLAGS": None}, cwd=tmp_path)
    assert result.returncode == 0, f"{page} python block {index}:\n{result.stderr[-3000:]}"
