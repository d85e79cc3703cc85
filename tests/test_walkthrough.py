"""docs/walkthrough.ipynb runs as committed: executed here (its minute of training cut to a few
seconds) it raises nothing, its own checks hold (the attention computed by hand equals the
model's), and the cells that do not depend on training print what the committed notebook shows,
which was executed in one go from the top."""

import copy
import shutil

import nbformat
from conftest import REPO, program_env, run_program, shakespeare
from nbclient import NotebookClient

NOTEBOOK = REPO / "docs" / "walkthrough.ipynb"


def printed(cell) -> str:
    """What a code cell printed (its stream outputs), as one text."""
    return "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")


def test_the_committed_notebook_was_executed_in_order_without_errors():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert not [output for cell in code for output in cell.outputs if output.output_type == "error"]
    pictures = [output for cell in code for output in cell.outputs if "image/png" in output.get("data", {})]
    assert len(pictures) == 4  # the attention of section 3, the loss curve, the attention maps, the surprise


def test_the_walkthrough_runs_and_prints_what_it_shows(tmp_path):
    committed = nbformat.read(NOTEBOOK, as_version=4)
    notebook = copy.deepcopy(committed)
    for cell in notebook.cells:
        cell.source = cell.source.replace("SECONDS = 60 ", "SECONDS = 3 ")
    assert notebook.cells != committed.cells  # the training cell was found and shortened
    text = tmp_path / "data/shakespeare_char/input.txt"  # where train.py puts it: read from there, offline
    text.parent.mkdir(parents=True)
    shutil.copy(shakespeare(), text)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=program_env({"XLA_FLAGS": None}))  # raises on a cell's error or a failed assert
    for ran, kept in zip(notebook.cells, committed.cells, strict=True):
        if "exact" in kept.metadata.get("tags", []):
            assert printed(ran) == printed(kept), ran.source[:200]
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {"data/shakespeare_char/input.txt"}  # nothing that git status would show


def test_without_the_text_or_a_network_the_notebook_says_where_to_put_it(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    reading = next(cell.source for cell in notebook.cells if "shakespeare_char" in cell.source)
    code = "import urllib.request\nfrom pathlib import Path\nimport gptjax\n" + reading
    # a proxy on a closed local port: the download fails at once, network or not
    result = run_program(["-c", code], env={"https_proxy": "http://127.0.0.1:9", "http_proxy": None,
                                            "no_proxy": None}, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("no network to download Shakespeare (")
    assert result.stderr.endswith(f"put its input.txt at {tmp_path}/data/shakespeare_char/input.txt\n")
    assert len(result.stderr.splitlines()) == 1
