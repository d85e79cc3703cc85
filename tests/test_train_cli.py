"""train.py end to end: a tiny model on a small corpus, through the real command line."""

import json
import math
import pathlib
import re
import subprocess

import jax
import jax.numpy as jnp
import pytest
from conftest import CORPUS, REPO, chinese_text, cli_error, run_program, tiny_run_args

from gptjax import bench, checkpoint, loop
from gptjax import train as train_program
from gptjax.config import from_command_line
from gptjax.errors import UsageError


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return run_program(["train.py", *args])


def records(out_dir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def assert_start_up_says_what_trains_on_what(result: subprocess.CompletedProcess, tmp_path: pathlib.Path,
                                             out: str) -> None:
    """The first lines of a run: what was prepared, the model, the data, how it runs and where it
    writes, how long it will take; and config.json holds the resolved run."""
    lines = result.stdout.splitlines()
    vocab, train, val = len(set(CORPUS)), int(len(CORPUS) * 0.9), len(CORPUS) - int(len(CORPUS) * 0.9)
    assert lines[0] == (f"prepared {tmp_path}/data/tiny from {tmp_path}/corpus.txt: char tokenizer, vocabulary "
                        f"{vocab}, 1 document, {train:,} train and {val:,} val tokens")
    n_params = 12 * 16 * 16 + vocab * 16 + 3 * 16  # nanoGPT's count, positions left out (no biases)
    assert lines[1] == (f"training a new GPT: {n_params:,} parameters, 1 layer, 2 heads, 16 wide, block_size 16, "
                        f"vocabulary {vocab}")
    assert lines[2] == f"data: {tmp_path}/data/tiny (char tokens: {train:,} train, {val:,} val)"
    assert lines[3] == ("on 1 x cpu (mesh data=1 fsdp=1), float32, masked attention; iterations 0 to 8 of 1 x 4 x 16 "
                        "tokens, evaluating every 4")
    assert lines[4] == (f"writing to {tmp_path}/{out}: config.json (every setting, as resolved), metrics.jsonl, "
                        "checkpoints/")
    assert "so 8 iterations and 3 evaluations will take" in lines[5]
    assert "weight_decay" not in result.stdout  # the full config is in config.json, not on the screen
    recorded = json.loads((tmp_path / out / "config.json").read_text())
    assert recorded["mesh"] == {"data": 1, "fsdp": 1} and recorded["attention"] == "masked"
    assert recorded["vocab_size"] == vocab and recorded["n_embd"] == 16 and recorded["weight_decay"] == 0.1
    assert "--xla_cpu_experimental_ynn_fusion_type" in recorded["environment"]["XLA_FLAGS"]  # how it ran


def test_a_run_says_what_it_does_and_records_every_step(tmp_path):
    whole = run_cli(tiny_run_args(tmp_path, out="whole"))
    assert whole.returncode == 0, whole.stderr
    assert "step 8: train loss" in whole.stdout and "iter 7: loss" in whole.stdout
    assert (tmp_path / "whole/checkpoints/8").is_dir()
    assert_start_up_says_what_trains_on_what(whole, tmp_path, "whole")
    done = re.fullmatch(r"done in ([\d.]+) s: ([\d.]+) s setting up \(data, model, compiling, the CPU estimate\), "
                        r"([\d.]+) s training, ([\d.]+) s evaluating, ([\d.]+) s saving checkpoints",
                        whole.stdout.splitlines()[-1])
    assert done and float(done[1]) == pytest.approx(sum(map(float, done.groups()[1:])), abs=0.25)

    # the keys docs/config.md documents (mfu only where the device's peak is known); resuming
    # exactly: tests/test_long_runs.py
    rows = records(tmp_path / "whole")
    assert all(r.keys() == {"iter", "loss", "grad_norm", "lr", "ms_per_iter", "tokens_per_s"}
               for r in rows if "loss" in r)
    assert all(r.keys() == {"iter", "train_loss", "val_loss", "train_bpb", "val_bpb"} for r in rows if "val_loss" in r)
    # characters of ASCII text: a byte each, so bits per byte are the loss in bits
    assert all(r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2), rel=1e-6) for r in rows if "val_loss" in r)
    assert [r["iter"] for r in rows if "loss" in r] == list(range(8))


def test_bad_input_stops_with_one_line_and_keeps_the_checkpoint(tmp_path):
    def error(*extra, **overrides) -> str:
        return cli_error("train.py", *tiny_run_args(tmp_path, **overrides), *extra)

    assert "unknown config key 'n_layers'; closest valid keys: n_layer" in error("--config.n_layers=2")
    assert "--config.max_iters=many" in error(max_iters="many")
    assert "holds no checkpoint" in error(init_from="resume")

    assert run_cli(tiny_run_args(tmp_path, max_iters=4)).returncode == 0
    saved = sorted(p.name for p in (tmp_path / "out/checkpoints").iterdir())
    metrics = (tmp_path / "out/metrics.jsonl").read_text()
    assert "has n_embd=16 but the command line sets --config.n_embd=32" in error(init_from="resume", n_embd=32)
    assert "already holds a checkpoint (iter 4)" in error()
    assert sorted(p.name for p in (tmp_path / "out/checkpoints").iterdir()) == saved
    assert (tmp_path / "out/metrics.jsonl").read_text() == metrics

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "is empty" in error(out="o2", input_file=empty, dataset="empty")
    short = tmp_path / "short.txt"
    short.write_text("x" * 100)  # val gets 10 characters
    assert "needs at least 17" in error(out="o3", input_file=short, dataset="short")
    assert "no text for dataset 'absent'" in error(out="o4", input_file="", dataset="absent")


@pytest.mark.parametrize(("program", "module", "runs"), [("train.py", train_program, "train"),
                                                        ("bench.py", bench, "training")])
def test_a_device_out_of_memory_is_one_line_and_other_errors_keep_their_traceback(tmp_path, monkeypatch, program,
                                                                                  module, runs):
    def too_large(*args, **kwargs):  # 512 TiB, more than any machine's address space: XLA's own error
        jax.jit(lambda: jnp.ones((2**47,), jnp.float32))()

    monkeypatch.setattr(module, runs, too_large)
    assert cli_error(program, *tiny_run_args(tmp_path)) == (
        f"{program}: error: the device ran out of memory (RESOURCE_EXHAUSTED: Out of memory allocating "
        f"{2**49} bytes): lower --config.batch_size (a larger gradient_accumulation_steps keeps the tokens per "
        "update) or block_size, or pass --config.remat=True or --config.dtype=bfloat16, or shard with mesh.fsdp "
        "across devices")

    def broken(*args, **kwargs):
        raise RuntimeError("INTERNAL: a bug, whose traceback says where")

    monkeypatch.setattr(module, runs, broken)
    with pytest.raises(RuntimeError, match="INTERNAL: a bug"):
        module.main([program, *tiny_run_args(tmp_path)])


def test_eval_only_evaluates_once_and_trains_nothing(tmp_path):
    assert run_cli(tiny_run_args(tmp_path, max_iters=4)).returncode == 0
    result = run_cli(tiny_run_args(tmp_path, init_from="resume", eval_only=True))
    assert result.returncode == 0, result.stderr
    assert "step 4: train loss" in result.stdout and "iter 4:" not in result.stdout


def test_a_run_with_every_new_architecture_and_optimizer_choice_trains_and_resumes_as_it_was(tmp_path):
    fast = dict(position_encoding="rope", norm="rmsnorm", qk_norm=True, mlp_activation="relu2",
                tie_embeddings=False, logit_softcap=15.0, zero_init_proj=True, optimizer="muon", muon_lr=0.05,
                learning_rate=3e-3, lr_schedule="wsd", cooldown_frac=0.5, dropout=0.0)
    train_program.main(["train.py", *tiny_run_args(tmp_path, **fast)])  # in this process: no start-up to wait for
    rows = records(tmp_path / "out")
    evaluations = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(evaluations) == 3 and evaluations[0] > evaluations[1] > evaluations[2]  # Muon learns
    assert rows[1]["iter"] == 0 and rows[1]["lr"] == pytest.approx(0.05 / 3)  # Muon's rate, warming up
    recorded = json.loads((tmp_path / "out/config.json").read_text())
    assert {key: recorded[key] for key in fast} == fast
    # a resumed run takes the architecture from its checkpoint, and refuses a command line that differs
    assert "has position_encoding=rope but the command line sets --config.position_encoding=learned" in cli_error(
        "train.py", *tiny_run_args(tmp_path, init_from="resume", max_iters=12, position_encoding="learned"))


def test_counts_read_as_english():
    assert (loop._count(1, "evaluation"), loop._count(2, "evaluation")) == ("1 evaluation", "2 evaluations")
    assert loop._count(12_000, "iteration") == "12,000 iterations"


def test_a_run_whose_updates_turn_non_finite_skips_them_then_stops_with_valid_records(tmp_path):
    # a learning rate this large makes the parameters overflow within a few steps; every later
    # step's loss is non-finite, its update skipped, until max_nonfinite_steps of them in a row
    args = tiny_run_args(tmp_path, learning_rate=1e30, warmup_iters=0, max_iters=40, eval_interval=100,
                         max_nonfinite_steps=3)
    with pytest.raises(UsageError, match=r"stopped at iteration \d+: 3 steps in a row had a non-finite loss or "
                                         rf"gradient .* the newest checkpoint: {tmp_path}/out/checkpoints/0\. "):
        loop.train(from_command_line(["train.py", *args]))

    def no_nan(constant):
        raise AssertionError(f"metrics.jsonl holds {constant}")

    lines = (tmp_path / "out/metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=no_nan) for line in lines]
    skipped = [row for row in rows if row.get("nonfinite")]
    assert len(skipped) == 3 and all(row["loss"] is None for row in skipped)
    assert rows[-1]["iter"] < 39  # it stopped early


def test_a_diverged_evaluation_is_recorded_as_null_said_in_the_log_and_never_the_best(tmp_path, capsys):
    args = tiny_run_args(tmp_path, learning_rate=1e9, warmup_iters=0, max_iters=10, eval_interval=5,
                         max_nonfinite_steps=100, keep_checkpoints=1)
    loop.train(from_command_line(["train.py", *args]))

    def no_nan(constant):
        raise AssertionError(f"metrics.jsonl holds {constant}")

    lines = (tmp_path / "out/metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=no_nan) for line in lines]
    evaluations = [row for row in rows if "val_loss" in row]
    assert evaluations[0]["val_loss"] > 0 and "nonfinite" not in evaluations[0]
    diverged = {"train_loss": None, "val_loss": None, "train_bpb": None, "val_bpb": None, "nonfinite": True}
    assert evaluations[1:] == [{"iter": 5, **diverged}, {"iter": 10, **diverged}]
    assert ("step 10: train loss nan, val loss nan, val bpb nan (not finite: the model has diverged, so this is never "
            "the best)") in capsys.readouterr().out
    assert checkpoint.steps(tmp_path / "out") == [0, 10]  # the newest, and the best: the finite one
    assert checkpoint.choose(tmp_path / "out", "best")[0][0] == 0


def test_a_text_too_short_for_the_model_is_warned_of_as_memorisation():
    char_cpu = from_command_line(["train.py", "--config", "char_cpu"])
    # the README's "your own text" on a page of text: 2,057 training characters for 795,904 parameters
    warning = loop._too_little_data(char_cpu, 795_904, 2_057)
    assert warning.startswith("the training split has only 2,057 tokens for 795,904 parameters (2.7 iterations' "
                              "worth): the model will memorise it")
    assert loop._too_little_data(char_cpu, 795_904, 1_003_854) is None  # tinyshakespeare
    char = from_command_line(["train.py", "--config", "char"])
    assert loop._too_little_data(char, 10_745_088, 1_003_854) is None  # nanoGPT's own recipe, which overfits late
    char.init_from = "gpt2"  # finetuning a large model on a small text is what finetuning is
    assert loop._too_little_data(char, 124_000_000, 300_000) is None


def snapshot(folder: pathlib.Path) -> dict[str, tuple[bytes, int | None]]:
    """Every file under folder: its bytes and modification time (but the lock's: a run that is
    refused held it while it looked, and leaves it empty as it found it)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), None if p.name == "run.lock" else p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_refused_run_changes_nothing_and_another_tokenizer_is_prepared_beside(tmp_path, capsys):
    (tmp_path / "data/chinese").mkdir(parents=True)
    (tmp_path / "data/chinese/input.txt").write_text(chinese_text(30_000), encoding="utf-8")
    chinese = ["--config", str(REPO / "configs/chinese_cpu.py"), f"--config.data_dir={tmp_path / 'data'}",
               "--config.max_iters=4", "--config.eval_interval=2", "--config.eval_iters=1", "--config.n_layer=1",
               "--config.n_embd=16", "--config.n_head=2", "--config.block_size=16", "--config.batch_size=2"]
    char_run = [*chinese, f"--config.out_dir={tmp_path / 'out-chinese'}"]
    train_program.main(["train.py", *char_run])
    before = snapshot(tmp_path)
    message = cli_error("train.py", *char_run, "--config.tokenizer=bpe", "--config.bpe_vocab_size=300")
    assert f"{tmp_path}/out-chinese already holds a checkpoint (iter 4)" in message
    assert snapshot(tmp_path) == before  # byte for byte, and not rewritten

    capsys.readouterr()
    train_program.main(["train.py", *chinese, f"--config.out_dir={tmp_path / 'out-bpe'}", "--config.tokenizer=bpe",
                        "--config.bpe_vocab_size=300"])
    said = capsys.readouterr().out
    assert said.startswith(f"prepared {tmp_path}/data/chinese/bpe-300 from {tmp_path}/data/chinese/input.txt: "
                           "bpe 300 tokenizer")
    assert f"data: {tmp_path}/data/chinese/bpe-300 (bpe tokens: " in said
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before  # the char data untouched
    train_program.main(["train.py", *char_run, "--config.init_from=resume", "--config.max_iters=6"])
    said = capsys.readouterr().out
    assert "prepared" not in said and f"data: {tmp_path}/data/chinese (char tokens: " in said
    assert checkpoint.latest_step(tmp_path / "out-chinese") == 6


def test_an_unwritable_checkpoints_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "out").mkdir()
    # a folder even root cannot write to, as a read-only checkpoints folder is to its user
    (tmp_path / "out/checkpoints").symlink_to("/sys/kernel")
    message = cli_error("train.py", *tiny_run_args(tmp_path))
    assert message == (f"train.py: error: config.out_dir: cannot write in the folder {tmp_path}/out/checkpoints "
                       "(Permission denied): choose one you can write to")
    assert not (tmp_path / "data").exists()  # nothing prepared
