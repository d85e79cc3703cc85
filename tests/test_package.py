"""The package's shape: no import cycles, a light `import gptjax`, and programs that run from an
installed (not editable) gptjax with the recipes it ships."""

import ast
import json
import shutil

import pytest
from conftest import CORPUS, REPO, run_program

PACKAGE = REPO / "gptjax"


def imported_modules(path) -> set[str]:
    """The gptjax modules a file imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    modules = {f"gptjax.{p.stem}" for p in PACKAGE.glob("*.py")} | {"gptjax.configs"}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("gptjax.")}
        elif isinstance(node, ast.ImportFrom) and node.module == "gptjax":
            found |= {f"gptjax.{a.name}" if f"gptjax.{a.name}" in modules else "gptjax.__init__" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gptjax."):
            found.add(node.module)
    return found


def test_no_module_of_gptjax_imports_in_a_circle():
    graph = {f"gptjax.{p.stem}": imported_modules(p) for p in PACKAGE.glob("*.py")}
    done, path = set(), []

    def visit(module):
        assert module not in path, "import cycle: " + " -> ".join([*path[path.index(module):], module])
        if module in done or module not in graph:
            return
        path.append(module)
        for dependency in sorted(graph[module]):
            visit(dependency)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert "gptjax.loop" in graph["gptjax.train"]  # the walk sees real edges


def test_import_gptjax_loads_no_jax_and_every_public_name_resolves():
    result = run_program(["-c", "import sys, gptjax; print(sorted(m for m in sys.modules "
                                "if m.split('.')[0] in ('gptjax', 'jax', 'flax', 'optax', 'numpy')))"])
    assert result.returncode == 0, result.stderr
    assert ast.literal_eval(result.stdout) == ["gptjax"]
    import gptjax.generation  # a submodule import must not shadow the function of the same stem

    assert gptjax.generate is gptjax.generation.generate and gptjax.checkpoint.__name__ == "gptjax.checkpoint"
    assert all(getattr(gptjax, name) is not None for name in gptjax.__all__)
    with pytest.raises(AttributeError, match="no attribute 'GPT3'"):
        gptjax.GPT3  # noqa: B018


def test_an_installed_gptjax_trains_and_samples_with_a_shipped_recipe(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "out*", "data", "build", "*.egg-info",
                                                                "__pycache__"))
    site = tmp_path / "site"
    install = run_program(["-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
                           str(site), str(source)], timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    assert (site / "gptjax/configs/char_cpu.py").is_file()  # the recipes ship with the package
    run = tmp_path / "run"  # neither the clone nor its configs/ in sight
    run.mkdir()
    (run / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    env = {"PYTHONPATH": str(site)}
    train = run_program(["-m", "gptjax.train", "--config", "char_cpu", "--config.input_file=corpus.txt",
                         "--config.dataset=tiny", "--config.out_dir=out", "--config.n_layer=1",
                         "--config.max_iters=2", "--config.eval_interval=2", "--config.eval_iters=1",
                         "--config.always_save_checkpoint=True"], env=env, cwd=run)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "step 2: train loss" in train.stdout
    assert json.loads((run / "out/config.json").read_text())["n_layer"] == 1
    sample = run_program(["-m", "gptjax.sample", "--out_dir=out", "--num_samples=1", "--max_new_tokens=5",
                          "--start=the"], env=env, cwd=run)
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert sample.stdout.startswith("the") and len(sample.stdout.split("\n---")[0]) == len("the") + 5
    where = run_program(["-c", "import gptjax; print(gptjax.__file__)"], env=env, cwd=run)
    assert where.stdout.strip() == str(site / "gptjax/__init__.py")  # not the clone's


def test_dependencies_point_down():
    graph = {f"gptjax.{p.stem}": imported_modules(p) for p in PACKAGE.glob("*.py")}
    assert "gptjax.prepare" not in graph["gptjax.data"]  # batches need no corpus pipeline
    assert "gptjax.sharding" not in graph["gptjax.step"]  # the maths of a step places nothing
    programs = {"gptjax.train", "gptjax.sample", "gptjax.explain", "gptjax.plot", "gptjax.bench"}
    assert {module: sorted(imports & programs) for module, imports in graph.items() if imports & programs} == {}


# What a process looks like from inside: every logger's handlers and filters, the hooks Python
# calls on uncaught and unraisable errors, and every signal's handler.
PROCESS_STATE = """
import json, logging, signal, sys
def process_state():
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in sorted(logging.root.manager.loggerDict)]
    return json.dumps({
        "loggers": {logger.name: [repr(h) for h in logger.handlers] + [repr(f) for f in logger.filters]
                    for logger in loggers if logger.handlers or logger.filters},
        "hooks": [repr(sys.excepthook), repr(sys.unraisablehook), repr(sys.displayhook)],
        "signals": {s.name: repr(signal.getsignal(s)) for s in signal.valid_signals() if isinstance(s, signal.Signals)
                    and s not in (signal.SIGKILL, signal.SIGSTOP)},
        "wakeup": (lambda fd: (signal.set_wakeup_fd(fd), fd)[1])(signal.set_wakeup_fd(-1)),
    }, sort_keys=True)
"""


def test_importing_any_module_changes_nothing_in_the_process():
    # the libraries gptjax builds on first (what they do on import is theirs), then each module
    modules = sorted(f"gptjax.{p.stem}" for p in PACKAGE.glob("*.py"))
    code = PROCESS_STATE + f"""
import absl.logging, flax.nnx, jax, matplotlib, ml_collections, numpy, optax, orbax.checkpoint, rich
import importlib
before = process_state()
for module in {modules!r}:
    importlib.import_module(module)
    assert process_state() == before, module + " changed " + process_state()
print("unchanged")
"""
    result = run_program(["-c", code])
    assert result.returncode == 0 and result.stdout == "unchanged\n", result.stderr[-3000:]
