"""Sharded training on 8 CPU devices (XLA's host-platform device count) and across 2 processes.

Each case runs in a subprocess: the device count and jax.distributed must be set before JAX starts.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap

import jax
import pytest
from conftest import REPO, program_env, run_program, tiny_run_args

from gptjax import checkpoint, loop, sharding
from gptjax.errors import UsageError

EIGHT_DEVICES = {"XLA_FLAGS": f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count=8"}


def test_a_mesh_that_does_not_fit_the_devices_is_one_line():
    n = jax.device_count()
    devices = f"{n} device{'s' * (n != 1)}"
    for data, fsdp, message in ((-1, n + 1, f"config.mesh.fsdp={n + 1} must be a divisor of the {devices}"),
                                (-1, -1, r"config.mesh.fsdp=-1 must be a divisor .* \(only mesh.data takes -1"),
                                (n + 1, 1, f"config.mesh.data={n + 1} x mesh.fsdp=1 must equal the {devices}$")):
        with pytest.raises(UsageError, match=message):
            sharding.make_mesh(data, fsdp)
    assert dict(sharding.make_mesh(-1, 1).shape) == {"data": n, "fsdp": 1}


SHARDED_STEP = textwrap.dedent("""
    import jax, numpy as np, optax
    from flax import nnx
    import gptjax
    from gptjax import optim, sharding

    assert jax.device_count() == 8
    # wide enough that FSDP shards the big matrices (sharding.MIN_SHARDED_SIZE)
    cfg = gptjax.GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=4, n_embd=128, dropout=0.1)
    # Sharding changes only the order of the gradient reductions. Plain SGD shows the gradient
    # itself; Adam's first step (~ lr * sign(g)) would magnify round-off in near-zero gradients.
    tx = optax.sgd(0.1)
    tokens = np.random.default_rng(0).integers(0, 64, (16, 17))
    x, y = tokens[:, :-1], tokens[:, 1:]

    def one_step(mesh):
        state = gptjax.TrainState.create(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), tx)
        if mesh is not None:
            state = sharding.place(state, sharding.state_shardings(state, mesh))
            batch = sharding.put_batch((x, y), mesh)
        else:
            batch = (x, y)
        state, metrics = gptjax.train_step(state, *batch)
        return state, float(metrics["loss"])

    def assert_equal(state, loss, reference, reference_loss, what):
        assert abs(loss - reference_loss) < 1e-5, (what, loss, reference_loss)
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, err_msg=str(what))

    reference, reference_loss = one_step(None)
    for data, fsdp in ((8, 1), (1, 8), (2, 4)):
        state, loss = one_step(sharding.make_mesh(data, fsdp))
        kernel = state.params["h"][0]["mlp"]["c_fc"]["kernel"]
        assert ("fsdp" in str(kernel.sharding.spec)) == (fsdp > 1), kernel.sharding
        assert_equal(state, loss, reference, reference_loss, (data, fsdp))

    # every architecture option that keeps gradients flowing (zero-initialised projections would
    # stop them), and Muon on the blocks' matrices, c_attn's split in three (its AdamW group's rate
    # is 0: the sign-like first step, above)
    cfg = gptjax.GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=4, n_embd=128, dropout=0.1,
                           position_encoding="rope", norm="rmsnorm", qk_norm=True, mlp_activation="relu2",
                           tie_embeddings=False, logit_softcap=15.0)
    tx = optim.muon(0.05, 0.0)
    reference, reference_loss = one_step(None)
    state, loss = one_step(sharding.make_mesh(2, 4))
    start = nnx.to_pure_dict(nnx.state(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), nnx.Param))
    moved = np.abs(reference.params["h"][0]["attn"]["c_attn"]["kernel"] - start["h"][0]["attn"]["c_attn"]["kernel"])
    assert moved.min() > 0, "Muon left c_attn as it was"
    assert_equal(state, loss, reference, reference_loss, "every option, Muon")
    print("sharded steps equal the single-device step")
""")


def test_sharded_train_steps_equal_the_single_device_step_with_every_option_and_muon():
    result = run_program(["-c", SHARDED_STEP], env=EIGHT_DEVICES)
    assert result.returncode == 0, result.stderr[-3000:]


SHARDED_INIT = textwrap.dedent("""
    import jax, numpy as np
    from flax import nnx
    import gptjax
    from gptjax import optim, sharding
    from gptjax.config import default_config

    cfg = gptjax.GPTConfig(block_size=64, vocab_size=512, n_layer=2, n_head=4, n_embd=256)
    tx = optim.from_config(default_config())
    make = lambda: gptjax.TrainState.create(gptjax.GPT(cfg, rngs=nnx.Rngs(0)), tx, seed=0)
    init = sharding.jit_sharded(make, sharding.make_mesh(data=1, fsdp=8))
    state = init()
    # the eager, unsharded state (jit may fuse the initialisers' arithmetic: a float32 ulp apart)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(make()), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-7, atol=1e-9)

    arrays = jax.tree.leaves((state.params, state.opt_state))
    large = [a for a in arrays if a.size >= sharding.MIN_SHARDED_SIZE]
    n_large_params = sum(a.size >= sharding.MIN_SHARDED_SIZE for a in jax.tree.leaves(state.params))
    assert len(large) == 3 * n_large_params  # each large parameter and its two AdamW moments
    for a in large:
        assert all(shard.data.size * 8 == a.size for shard in a.addressable_shards), (a.shape, a.sharding)

    # what XLA plans on each device for the initialisation (outputs and temporaries, the random
    # bits included): 1/8 of what it plans with every array whole, the small replicated ones aside
    small_bytes = sum(a.nbytes for a in jax.tree.leaves(state)) - sum(a.nbytes for a in large)
    planned = lambda analysis: analysis.output_size_in_bytes + analysis.temp_size_in_bytes
    sharded = planned(init.lower().compile().memory_analysis())
    unsharded = planned(sharding.jit_sharded(make, sharding.make_mesh(8, 1)).lower().compile().memory_analysis())
    assert sharded <= unsharded / 8 + small_bytes, (sharded, unsharded, small_bytes)
    print(f"planned per device: {sharded:,} bytes sharded, {unsharded:,} replicated")
""")


def test_sharded_initialisation_never_holds_a_whole_large_array_on_one_device():
    result = run_program(["-c", SHARDED_INIT], env=EIGHT_DEVICES)
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)


def tiny_train_args(tmp_path, out, **overrides) -> list[str]:
    return [str(REPO / "train.py"), *tiny_run_args(tmp_path, out, **{"max_iters": 6, "eval_interval": 3, **overrides})]


def losses(out_dir: pathlib.Path) -> dict:
    """{("train step" | "val", iter): loss}; a resumed run re-evaluates its first iteration."""
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {("val" if "val_loss" in r else "train step", r["iter"]): r.get("val_loss", r.get("loss"))
            for r in records}


def start_two_processes(args: list[str], second_args: list[str] | None = None) -> list[subprocess.Popen]:
    """train.py args started as the 2 processes of one run (second_args, if given, for the second),
    their output piped."""
    with socket.socket() as s:  # a free port on loopback for the coordinator
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = program_env({"PYTHONUNBUFFERED": "1", "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                       "JAX_NUM_PROCESSES": "2"})
    return [subprocess.Popen([sys.executable, *process_args], env={**env, "JAX_PROCESS_ID": str(i)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i, process_args in enumerate([args, second_args or args])]


def run_two_processes(args: list[str], signal_second_after: str | None = None) -> str:
    """Run train.py args as the 2 processes of one run; returns the first one's output.
    signal_second_after: SIGTERM the second process alone once the first printed this."""
    processes = start_two_processes(args)
    printed = ""
    if signal_second_after:
        for line in processes[0].stdout:
            printed += line
            if line.startswith(signal_second_after):
                processes[1].send_signal(signal.SIGTERM)
                break
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return printed + outputs[0][0]


@pytest.mark.parametrize(("failing", "fails"), [(0, "preparing the dataset"), (0, "reading HellaSwag"),
                                                (1, "preparing the dataset")])
def test_when_one_process_fails_to_make_what_all_read_every_process_stops_in_one_line(tmp_path, failing, fails):
    # The others waited at the next collective, which the failed process never reached, until a
    # traceback from Gloo's 30 s timeout on CPUs (on GPUs, until the distributed runtime's timeouts).
    bad = tmp_path / "bad.jsonl"
    if fails == "preparing the dataset":
        bad.write_text('{"text": "a record"}\n{"text": 5}\n')
        overrides = {"input_file": bad}
        error = (f"{bad}, line 2: 'text' is int, not a string: every record of a corpus needs its text as a "
                 "string under 'text' (config.text_key)")
    else:
        bad.write_text("\n")
        overrides = {"tokenizer": "gpt2", "hellaswag_interval": 3, "hellaswag_file": bad}
        error = f"{bad} holds no HellaSwag example: give rowanz/hellaswag's hellaswag_val.jsonl"
    if failing == 0:
        processes = start_two_processes(tiny_train_args(tmp_path, "out", **overrides))
    else:  # a host with its own disk, which holds another corpus: it prepares its own copy
        processes = start_two_processes(tiny_train_args(tmp_path, "out"),
                                        tiny_train_args(tmp_path, "out", data_dir=tmp_path / "own", **overrides))
    try:
        errors = [p.communicate(timeout=25)[1].strip().splitlines()[-1] for p in processes]
    finally:
        for p in processes:
            p.kill()  # none left waiting when the test fails
    assert [p.returncode for p in processes] == [1, 1]
    others = (f"train.py: error: process {failing} did not finish {fails} (its output says why), so this process "
              "stops too: start them all again")
    assert errors[failing] == f"train.py: error: {error}" and errors[1 - failing] == others


def test_two_processes_stop_together_on_one_sigterm_and_resume_like_one_process(tmp_path):
    # SIGTERM reaches one process only, as when a scheduler signals hosts at different moments: both
    # agree on one stop step (every loop.SYNC_STEPS steps, and at the start of an evaluation, which
    # is then abandoned), save it and exit 0; resumed, they train as one process does
    printed = run_two_processes(tiny_train_args(tmp_path, "multi", max_iters=100_000), signal_second_after="iter 12:")
    stopped_at = checkpoint.latest_step(tmp_path / "multi")
    assert stopped_at % loop.SYNC_STEPS == 0 or stopped_at % 3 == 0  # eval_interval
    assert f"stopped at iteration {stopped_at} on request" in printed
    run_two_processes(tiny_train_args(tmp_path, "multi", init_from="resume", max_iters=stopped_at + 3))
    single = run_program(tiny_train_args(tmp_path, "single", max_iters=stopped_at + 3))
    assert single.returncode == 0, single.stderr[-3000:]
    multi, single = losses(tmp_path / "multi"), losses(tmp_path / "single")
    assert multi.keys() == single.keys() and len([key for key in single if key[0] == "train step"]) == stopped_at + 3
    # the same batches and dropout masks; only the order of the cross-process sums differs
    assert multi == pytest.approx(single, abs=1e-4)
