"""Helpers shared by the tests: the repository's path, a tiny model, tiny training runs, and
running the programs (in this process, or as a subprocess)."""

import dataclasses
import importlib
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import NoReturn

# The tests run offline: the Hugging Face libraries fail at once instead of retrying the network
# (they read this when first imported, which flax can do, so before anything else).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gptjax import environment  # noqa: E402  (imports no JAX)

# In-process runs compile with the XLA flags the programs set, so that a run in this process
# computes bit for bit what a program's subprocess does.
environment.use_measured_xla_flags()
# The tests compile hundreds of small programs and run each for milliseconds: at LLVM's -O0 (XLA's
# default is -O2) a compile takes a third less time and the suite a fifth. Round-off can differ from
# an optimised build in the last bits, so tests compare with tolerances or with runs compiled alike
# (a program's subprocess inherits these flags); test_readme runs its blocks as a user would.
environment.add_xla_flags({"--xla_backend_optimization_level": "0"})
# Many tests compile the same tiny programs (a compile is seconds, a run milliseconds): JAX's
# persistent compilation cache shares them across tests and the programs' subprocesses, in a
# folder of this pytest run's own, so nothing carries over from one run to the next.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="gptjax-test-xla-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402
from flax import nnx  # noqa: E402

import gptjax  # noqa: E402
from gptjax.errors import UsageError  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = ["first document", "second, with ünïcode", "third\n\nwith a blank line"]  # a tiny corpus
SHAKESPEARE = REPO.parent / "shared/data/tinyshakespeare/input.txt"
# GPT-2's BPE files as a tiktoken cache (see its README): the real GPT-2 tokenizer, offline
TIKTOKEN_CACHE = REPO.parent / "shared/data/tiktoken-cache"
if TIKTOKEN_CACHE.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_CACHE))


def shakespeare() -> pathlib.Path:
    """The Shakespeare corpus beside the clone; the test is skipped where it is not (_missing)."""
    if not SHAKESPEARE.is_file():
        _missing(f"the Shakespeare corpus is not at {SHAKESPEARE}")
    return SHAKESPEARE


CHINESE = REPO.parent / "shared/data/chinese/input.txt"  # 1.0 M characters, 6,174 distinct (its README)


def chinese_text(n_chars: int) -> str:
    """The first n_chars characters of the Chinese corpus beside the clone; the test is skipped
    where it is not (_missing)."""
    if not CHINESE.is_file():
        _missing(f"the Chinese corpus is not at {CHINESE}")
    with open(CHINESE, encoding="utf-8") as f:
        return f.read(n_chars)


def gpt2_tokenizer() -> gptjax.GPT2Tokenizer:
    """GPT-2's real BPE (from TIKTOKEN_CACHE_DIR or a network); the test is skipped without it (_missing)."""
    try:
        return gptjax.GPT2Tokenizer()
    except UsageError as e:
        _missing(f"GPT-2's BPE files: {e}")


def _missing(reason: str) -> NoReturn:
    # A clone without ../shared/data skips what needs its files; CI must run every test, and sets
    # GPTJAX_TEST_DATA=required so that a missing file fails there instead of passing as a skip.
    if os.environ.get("GPTJAX_TEST_DATA") == "required":
        pytest.fail(f"{reason} (GPTJAX_TEST_DATA=required)")
    pytest.skip(reason)


# A corpus of a few KB: enough tokens for tiny runs' batches and evaluations.
CORPUS = "\n".join(f"{i}: the quick brown fox jumps over the lazy dog, said citizen {i}." for i in range(300))


def tiny_config(**overrides) -> gptjax.GPTConfig:
    """A model small enough that a test compiles and runs it in about a second."""
    fields = dict(block_size=16, vocab_size=23, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True)
    return gptjax.GPTConfig(**{**fields, **overrides})


@pytest.fixture
def tiny_model() -> gptjax.GPT:
    return gptjax.GPT(tiny_config(), rngs=nnx.Rngs(0))


# A model's logits, compiled: run eagerly, every operation would compile on its own.
forward = nnx.jit(lambda model, idx, key=None: model(idx, rngs=key))


def save_untrained_run(out: pathlib.Path, text: str) -> pathlib.Path:
    """out as a training run holding what sample.py and explain.py read of its checkpoint: the
    parameters of a tiny untrained char model of text's characters, its config and tokenizer."""
    vocab = gptjax.CharVocab.from_text(text)
    cfg = tiny_config(vocab_size=len(vocab))
    params = nnx.to_pure_dict(nnx.state(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), nnx.Param))
    gptjax.checkpoint.save(out, 0, {"params": params}, {"model": dataclasses.asdict(cfg),
                                                        "tokenizer": vocab.describe()})
    return out


def tiny_run_args(tmp_path: pathlib.Path, out: str = "out", **overrides) -> list[str]:
    """train.py arguments for a run of a few seconds: configs/char_cpu.py shrunk to a 1-layer,
    16-wide model on CORPUS (written to tmp_path), 8 iterations, evaluations at 0, 4 and 8."""
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        corpus.write_text(CORPUS, encoding="utf-8")
    settings = dict(input_file=corpus, data_dir=tmp_path / "data", dataset="tiny", out_dir=tmp_path / out,
                    n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, dropout=0.1,
                    max_iters=8, eval_interval=4, eval_iters=2, log_interval=1, warmup_iters=2,
                    lr_decay_iters=8, always_save_checkpoint=True)
    settings.update(overrides)
    return ["--config", str(REPO / "configs/char_cpu.py")] + [f"--config.{k}={v}" for k, v in settings.items()]


def program_env(env: dict | None = None) -> dict[str, str]:
    """The environment a program's subprocess runs in: this process's, on the CPU, with env's
    variables added, or removed where None. The programs' re-execution with huge pages is off
    unless env turns it on (it imports everything twice, seconds per program start;
    tests/test_environment.py tests it)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", environment.HUGE_PAGES_OFF: "0", **(env or {})}
    return {name: value for name, value in env.items() if value is not None}


def run_program(command: list[str], env: dict | None = None, cwd: pathlib.Path = REPO, timeout: int = 300,
                input: str | None = None) -> subprocess.CompletedProcess:
    """Run `python *command` (a script of the repository, or -m / -c ...) in program_env(env) and
    capture its output as text."""
    return subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          input=input, env=program_env(env))


def cli_error(script: str, *args: str) -> str:
    """Run the main() of the program `script` (train.py, sample.py, bench.py: gptjax.train, ...) in
    this process on args and return the message it exits with, checking that it is one line naming
    the program."""
    main = importlib.import_module(f"gptjax.{script.removesuffix('.py')}").main
    with pytest.raises(SystemExit) as exit_info:
        main([script, *args])
    message = str(exit_info.value.code)
    assert message.startswith(f"{script}: error: ") and "\n" not in message
    return message


def load_dataset(data_dir, dataset: str, input_file: str, block_size: int, tokenizer: str = "char",
                 rebuild: bool = False, announce=None, **options):
    """(tokenizer, {"train", "val"} tokens) of a dataset, prepared first where needed, as the
    training program asks for them."""
    from gptjax import data, prepare

    tokenizer, meta, folder = prepare.prepare_dataset(data_dir, dataset, input_file, tokenizer, rebuild, announce,
                                                      **options)
    return tokenizer, data.read_splits(folder, meta, block_size)


# The core's tests (the model, attention, the step, the optimizers, batches, tokenizers and
# sampling): `pytest -m core`, a minute or so on 2 cores, for a change to the maths.
CORE = {"test_model", "test_attention", "test_step", "test_optim", "test_data",
        "test_tokenizers", "test_generation"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if item.path.stem in CORE:
            item.add_marker(pytest.mark.core)
