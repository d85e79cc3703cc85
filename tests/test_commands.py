"""Every shell command of README.md and docs/*.md runs as written, in document order, in a folder
laid out as a clone (its scripts and recipes) with the files the commands name, and options
appended only to keep each run short. Each command of a page runs through the clone's script;
sample, explain and prepare run once more as `python -m gptjax.NAME` (train's own -m lines are in
the README). GPT-2's weights come from a Hugging Face cache made here (a small GPT-2-shaped
model), as the Hub would give them."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, chinese_text, program_env, shakespeare, tiny_config
from flax import nnx

import gptjax
from gptjax.config import from_command_line

# What cannot run on a test machine, and where what it does is tested instead.
NOT_HERE = {
    "JAX_COORDINATOR_ADDRESS=host0:1234": "two hosts: tests/test_sharding.py runs two processes on loopback",
    "python3 -m venv": ".ci/run installs the clone this way",
    "pip install": ".ci/run installs the clone this way",
    "python benchmarks/memory.py": "a measurement (it compiles GPT-2 124M six times): benchmarks are run by hand",
}
# Options appended to keep a run short: any that a command sets itself stay as it sets them.
SHORT = {
    "train": dict(max_iters=2, eval_interval=2, eval_iters=1, batch_size=8, block_size=32, log_interval=1,
                  hellaswag_examples=2, gradient_accumulation_steps=1),
    "scratch": dict(n_layer=1, n_head=2, n_embd=16),  # a new model's shape, not a pretrained or resumed one's
    "sample": dict(num_samples=1, max_new_tokens=4),
}
HF_DIR = "/path/to/hf_gpt2_dir"  # the docs' placeholder for a local Hugging Face GPT-2 directory


def shell_commands(text: str) -> list[str]:
    """The commands of the text's shell blocks (``` blocks that are not python), comments cut."""
    commands = []
    for language, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.removeprefix("$ ").split("  #")[0].strip()
            if language != "python" and re.match(r"(\w+=\S+ )*(python|pip)", line):
                commands.append(line)
    return commands


# The README in two parts, each run in a folder of its own (a test each, so that they run side by
# side): what a newcomer does first, then GPT-2's weights, which need nothing of the first part.
README_PARTS = REPO.joinpath("README.md").read_text(encoding="utf-8").split("\n## GPT-2 in and out\n")
PARTS = {"README.md": README_PARTS[0], "README.md, GPT-2 in and out": README_PARTS[1],
         **{f"docs/{page.name}": page.read_text(encoding="utf-8") for page in sorted((REPO / "docs").glob("*.md"))}}


def shortened(words: list[str]) -> list[str]:
    """The command's words with the options that keep it short appended."""
    program = next(word for word in words if word.endswith(".py") or word.startswith("gptjax."))
    program = program.removeprefix("gptjax.").removesuffix(".py").rsplit("/", 1)[-1]
    given = " ".join(words)
    if program == "train":
        pretrained = "init_from=" in given or "eval_gpt2" in given or "finetune" in given
        options = {**SHORT["train"], **({} if pretrained else SHORT["scratch"])}
        if "init_from=resume" in given:
            options = {"max_iters": 4}
        return words + [f"--config.{key}={value}" for key, value in options.items() if f"config.{key}=" not in given]
    if program == "sample":
        return words + [f"--{key}={value}" for key, value in SHORT["sample"].items() if f"--{key}=" not in given]
    if program == "explain":
        return words + ["--length=16"] * ("--length" not in given)
    return words


def fake_gpt2_cache(folder) -> None:
    """A Hugging Face cache holding "gpt2" ... "gpt2-xl" as one small GPT-2-shaped model (12 layers, 32 wide)."""
    model = gptjax.GPT(tiny_config(vocab_size=50257, block_size=128, n_layer=12, n_head=2, n_embd=32),
                       rngs=nnx.Rngs(0))
    for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"):
        commit = "0" * 40
        gptjax.export_hf(model, folder / f"models--{name}/snapshots/{commit}")
        (folder / f"models--{name}/refs").mkdir()
        (folder / f"models--{name}/refs/main").write_text(commit)


def make_clone(folder, commands: list[str]):
    """folder laid out as a clone, with the files the page's commands name: the texts, a prompt, a
    folder of shards, HellaSwag's first examples, and GPT-2 in a Hugging Face cache and a folder."""
    for script in REPO.glob("*.py"):
        shutil.copy(script, folder)
    shutil.copytree(REPO / "configs", folder / "configs")
    shutil.copytree(REPO / "benchmarks", folder / "benchmarks")
    text = shakespeare().read_text(encoding="utf-8")
    for dataset in ("shakespeare_char", "shakespeare"):
        (folder / "data" / dataset).mkdir(parents=True)
        (folder / "data" / dataset / "input.txt").write_text(text[:60_000], encoding="utf-8")
    if not any("input_file=owt/" in line for line in commands):  # else the commands prepare it from owt/
        (folder / "data/openwebtext").mkdir()
        (folder / "data/openwebtext/input.txt").write_text(text, encoding="utf-8")
    (folder / "my.txt").write_text(text, encoding="utf-8")  # enough text for a BPE of 8192 tokens
    (folder / "page.txt").write_text(text[:2_000], encoding="utf-8")
    (folder / "prompt.txt").write_text("ROMEO:", encoding="utf-8")
    if any("zh.txt" in line for line in commands):
        (folder / "zh.txt").write_text(chinese_text(1_100_000), encoding="utf-8")  # the whole Chinese corpus
    (folder / "owt").mkdir()  # 120 documents: gpt2.py's val split, 0.05% of the documents, is one of them
    for i in range(120):
        (folder / "owt" / f"{i:03}.txt").write_text(text[i * 500:(i + 1) * 500], encoding="utf-8")
    examples = [{"ctx": "A man is sitting on a roof. He", "endings": ["starts pulling up roofing.", "is ice skating.",
                                                                     "is holding a cube.", "eats a cake."],
                 "label": 0, "ind": i, "activity_label": "Roof shingle removal"} for i in range(2)]
    (folder / "data/hellaswag").mkdir()
    (folder / "data/hellaswag/hellaswag_val.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    fake_gpt2_cache(folder / "hub")
    (folder / "hf_gpt2_dir").symlink_to(folder / f"hub/models--gpt2/snapshots/{'0' * 40}")


def out_dir_of(clone, words: list[str]):
    """The out_dir a train.py command (its words after the program) writes."""
    cwd = os.getcwd()
    os.chdir(clone)
    try:
        return clone / from_command_line(["train.py", *words]).out_dir
    finally:
        os.chdir(cwd)


def run(clone, line: str, module: bool = False) -> subprocess.CompletedProcess:
    """The command `line` run in clone as written (a placeholder path replaced), shortened; with
    module, its program run as python -m gptjax.NAME."""
    line = line.replace(HF_DIR, str(clone / "hf_gpt2_dir"))
    env_words = re.match(r"((?:\w+=\S+ )*)", line)[1].split()
    words = shortened(shlex.split(line)[len(env_words):])
    if module:
        words = [part for word in words
                 for part in (["-m", f"gptjax.{word[:-3]}"] if re.fullmatch(r"\w+\.py", word) else [word])]
    env = {"HF_HUB_CACHE": str(clone / "hub"), **dict(word.split("=", 1) for word in env_words)}
    if "mesh.fsdp=8" in line:  # eight devices, as XLA makes of one CPU
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    return subprocess.run([sys.executable, *words[1:]], cwd=clone, env=program_env(env), capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("part", PARTS)
def test_every_shell_command_of_the_page_runs_as_written(tmp_path, part):
    commands = [line for line in shell_commands(PARTS[part]) if not line.startswith(tuple(NOT_HERE))]
    make_clone(tmp_path, commands)
    ran_as_module = set()
    for line in commands:
        words = shlex.split(line.replace(HF_DIR, str(tmp_path / "hf_gpt2_dir")))
        program = next((w.removesuffix(".py") for w in words if re.fullmatch(r"\w+\.py", w)), None)
        if (program == "train" or "gptjax.train" in words) and "init_from=resume" not in line:
            # the README's train lines are alternatives: each writes its out_dir anew, as it would alone
            start = words.index("train.py") + 1 if "train.py" in words else words.index("gptjax.train") + 1
            shutil.rmtree(out_dir_of(tmp_path, shortened(words)[start:]), ignore_errors=True)
        result = run(tmp_path, line)
        assert result.returncode == 0, f"{part}: {line}\n{result.stderr[-3000:]}"
        if program in {"sample", "explain", "prepare"} and program not in ran_as_module:
            ran_as_module.add(program)
            again = run(tmp_path, line, module=True)
            assert again.returncode == 0, f"{part}: {line} as python -m gptjax.{program}\n{again.stderr[-3000:]}"


def test_the_commands_are_found():
    assert len(shell_commands(PARTS["README.md"])) >= 15 and "python sample.py --init_from=gpt2 --start=\"Hello, " \
        "I'm a language model,\"" in shell_commands(PARTS["README.md, GPT-2 in and out"])
