"""docs/walkthrough.ipynb runs as committed: executed here (its minute of training cut to a few
seconds) it raises nothing, its own checks hold (the attention computed by hand equals the
model's), and the cells that do not depend on training print what the committed notebook shows,
which was executed in one go from the top."""

import copy
import shutil

import nbformat
from conftest import REPO, program_env, shakespeare
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
    shutil.copy(shakespeare(), tmp_path / "input.txt")
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=program_env({"XLA_FLAGS": None}))  # raises on a cell's error or a failed assert
    for ran, kept in zip(notebook.cells, committed.cells, strict=True):
        if "exact" in kept.metadata.get("tags", []):
            assert printed(ran) == printed(kept), ran.source[:200]
