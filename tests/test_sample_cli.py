"""sample.py end to end on a tiny checkpoint."""

import pathlib
import subprocess

import pytest
from conftest import cli_error, run_program, save_untrained_run

TEXT = "ROMEO: what light through yonder window breaks?\n"


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> pathlib.Path:
    return save_untrained_run(tmp_path_factory.mktemp("run"), TEXT)


def sample(*args: str) -> subprocess.CompletedProcess:
    return run_program(["sample.py", *args])


def test_samples_continue_the_prompt_and_follow_the_seed(out_dir, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("ROMEO:\nwhat", encoding="utf-8")
    args = [f"--out_dir={out_dir}", f"--start=FILE:{prompt}", "--num_samples=3", "--max_new_tokens=30",
            "--top_p=0.9"]
    first = sample(*args, "--seed=7")
    assert first.returncode == 0, first.stderr
    samples = first.stdout.split("---------------\n")
    assert len(samples) == 4 and samples[-1] == ""  # three samples, each closed by the separator
    for text in samples[:3]:
        assert text.startswith("ROMEO:\nwhat") and len(text) == len("ROMEO:\nwhat") + 30 + 1
        assert set(text) <= set(TEXT)
    assert len(set(samples[:3])) > 1  # each sample draws its own randomness
    assert sample(*args, "--seed=7").stdout == first.stdout
    assert sample(*args, "--seed=8").stdout != first.stdout


def test_bad_prompts_and_missing_checkpoints_are_refused(out_dir, tmp_path):
    def error(*args: str) -> str:
        return cli_error("sample.py", f"--out_dir={out_dir}", *args)

    assert ("error: the prompt has characters not in the vocabulary: 'QZ'; use characters the model was "
            "trained on") in error("--start=ROMEO Q Z")
    assert "does not exist" in error(f"--start=FILE:{tmp_path / 'nope.txt'}")
    assert "the prompt is empty" in error("--start=")
    assert "top_k must be a positive integer" in error("--top_k=0", "--start=R")
    assert f"{tmp_path} holds no checkpoint" in cli_error("sample.py", f"--out_dir={tmp_path}")


def test_a_directory_inside_a_run_names_the_run(out_dir):
    for inside in (out_dir / "checkpoints/0", out_dir / "checkpoints"):
        message = cli_error("sample.py", f"--out_dir={inside}")
        assert f"{inside} is inside the run {out_dir}: pass the run directory {out_dir} as out_dir" in message


@pytest.mark.parametrize("script, args, message", [
    ("sample.py", ["--tempreature=0.5"], "unrecognized arguments: --tempreature=0.5; did you mean --temperature?"),
    ("sample.py", ["--top-k=5"], "unrecognized arguments: --top-k=5; did you mean --top_k?"),
    ("sample.py", ["--checkpoint=bets"], "argument --checkpoint: invalid choice: 'bets' (choose from 'auto', "),
    ("sample.py", ["--num_samples=x"], "argument --num_samples: invalid int value: 'x'"),
    ("sample.py", ["--device=cuda"], "--device is nanoGPT's: JAX chooses the device; JAX_PLATFORMS=cpu runs on the "
                                     "CPU; leave it out"),
    ("sample.py", ["--compile=False"], "--compile is nanoGPT's: gptjax always compiles its steps"),
    ("explain.py", ["--out_dir=out"], "the following arguments are required: --text"),
    ("explain.py", ["--text=a", "--lyers=0"], "unrecognized arguments: --lyers=0; did you mean --layers?"),
    ("plot.py", [], "the following arguments are required: out_dirs"),
    ("plot.py", ["out", "--ouput=a.png"], "unrecognized arguments: --ouput=a.png; did you mean --output?"),
    ("bench.py", ["--config", "char_cpu", "--steps=many"], "argument --steps: invalid int value: 'many'"),
])
def test_every_program_answers_a_mistaken_option_in_one_line(script, args, message):
    assert cli_error(script, *args).startswith(f"{script}: error: {message}")


def test_a_program_run_as_a_module_is_named_so_in_its_errors():
    result = run_program(["-m", "gptjax.sample", "--tempreature=0.5"])
    assert result.returncode == 1
    assert result.stderr == ("python -m gptjax.sample: error: unrecognized arguments: --tempreature=0.5; did you mean "
                             "--temperature?\n")
