"""The in-process half of benchmarks/accelerator_check.sh: checks that need an accelerator to mean
anything, and the summary of the whole check.

    python benchmarks/accelerator_check.py checks [--tiny] --text TRAIN_BIN FILE
    python benchmarks/accelerator_check.py summary OUT_DIR

`checks`: (1) the two attention paths (masked, and jax.nn.dot_product_attention, cuDNN's fused
kernel on a GPU) in bfloat16 against a float32 reference, forward and gradients, with timings, and
Pallas's flash-attention kernel the same way, as a candidate; (2) a bfloat16 train step on the
config's mesh (FSDP axis included) with each path, against float32; (3) the gradient of GPT-2's
token embedding on uniform and on text-like tokens; (4) the loss's gradient on GPT-2's logits,
written out against autodiff's; (5) the char recipe's train step on random tokens (as bench.py
times it) and on the text (TRAIN_BIN), prefetched as the training loop feeds it. Exits 1 when a
check fails; one that crashes is recorded as its error, and the others still run.
`summary`: one table and OUT_DIR/accelerator_check.json from the JSON files the steps wrote.
"""

import argparse
import dataclasses
import functools
import itertools
import json
import math
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from timing import median_seconds

from gptjax import attention, data, environment, loop, optim, sharding
from gptjax.bench import seconds_per_call
from gptjax.config import default_config, from_command_line, model_config
from gptjax.model import ONE_HOT_MAX_VOCAB, GPTConfig, embed_tokens
from gptjax.start import sharded_state
from gptjax.step import cross_entropy, train_step

# Relative error allowed against the float32 reference: bfloat16 keeps 8 bits of mantissa, so a
# correct bf16 result lands between 1e-3 and 1e-2; a wrong mask or layout lands near 1.
BF16_TOLERANCE = 3e-2


def _relative_error(a, reference) -> float:
    a, reference = np.asarray(a, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(a - reference) / np.linalg.norm(reference))


def pallas_attention(q_BxTxHxD: jax.Array, k_BxTxHxD: jax.Array, v_BxTxHxD: jax.Array) -> jax.Array:
    """Causal attention by JAX's Pallas flash-attention kernel for GPUs (Triton; its default block
    sizes), run by Pallas's interpreter elsewhere. Not a path of the model: a candidate timed against
    cuDNN's, whose forward and backward are ~30% of a GPT-2 124M step by the first H100 run's numbers
    (docs/performance.md#one-h100-gpu)."""
    from jax.experimental.pallas.ops.gpu import attention as pallas_gpu  # imported here: experimental

    return pallas_gpu.mha(q_BxTxHxD, k_BxTxHxD, v_BxTxHxD, None, sm_scale=q_BxTxHxD.shape[-1] ** -0.5,
                          causal=True, interpret=jax.default_backend() != "gpu")


def attention_check(batch: int, seq: int, heads: int, head_dim: int, repeats: int, with_pallas: bool) -> dict:
    """Both paths in bfloat16 (B, T, H, D) against the masked path in float32, and with_pallas the
    same for pallas_attention, which only informs (its failure or crash fails nothing)."""
    shape = (batch, seq, heads, head_dim)
    q, k, v = (jax.random.normal(jax.random.key(i), shape, jnp.float32) for i in range(3))
    cotangent = jax.random.normal(jax.random.key(3), shape, jnp.float32)
    paths = {
        "masked": lambda q, k, v: attention.masked_attention(  # with the model's transposes
            *(x.transpose(0, 2, 1, 3) for x in (q, k, v)), attention.causal_mask(seq)
        ).transpose(0, 2, 1, 3),
        "fast": attention.fast_attention,
        **({"pallas": pallas_attention} if with_pallas else {}),
    }

    def forward_and_grads(fn, q, k, v):
        out, vjp = jax.vjp(fn, q, k, v)
        return out, vjp(cotangent.astype(out.dtype))

    reference = jax.jit(functools.partial(forward_and_grads, paths["masked"]))(q, k, v)
    bf16 = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    results = {"shape_BxTxHxD": list(shape), "auto_picks": attention.resolve(
        "auto", dropout_active=False, dtype=jnp.bfloat16, head_dim=head_dim)}
    for name, fn in paths.items():
        try:
            run = jax.jit(functools.partial(forward_and_grads, fn))
            out, grads = run(*bf16)
            results[f"{name}_forward_error"] = _relative_error(out, reference[0])
            results[f"{name}_grad_error"] = max(_relative_error(g, r)
                                                for g, r in zip(grads, reference[1], strict=True))
            results[f"{name}_forward_ms"] = 1e3 * median_seconds(functools.partial(jax.jit(fn), *bf16), repeats)
            results[f"{name}_fwd_bwd_ms"] = 1e3 * median_seconds(functools.partial(run, *bf16), repeats)
            # as the model runs it: calls queued on the device, none waiting for its launch and result
            results[f"{name}_fwd_bwd_ms_back_to_back"] = 1e3 * seconds_per_call(functools.partial(run, *bf16), repeats)
        except Exception as e:
            if name != "pallas":
                raise
            traceback.print_exc()
            results["pallas_crashed"] = f"{type(e).__name__}: {e}"
    hlo = jax.jit(paths["fast"]).lower(*bf16).compile().as_text()
    results["fast_runs_cudnn"] = "cudnn" in hlo.lower()
    results["passed"] = all(results[f"{name}_{part}_error"] < BF16_TOLERANCE
                            for name in ("masked", "fast") for part in ("forward", "grad"))
    return results


def train_step_check(cfg: GPTConfig, batch: int, steps: int) -> dict:
    """`steps` bfloat16 updates with each attention path from one initial state, on a mesh whose
    fsdp axis holds every device, against the same updates in float32."""
    mesh = sharding.make_mesh(data=1, fsdp=jax.device_count())
    config = default_config()
    config.warmup_iters = 0
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, cfg.block_size + 1), dtype=np.int32)
    x, y = sharding.put_batch((tokens[:, :-1], tokens[:, 1:]), mesh)

    def losses(dtype: str, path: str) -> list[float]:
        state = sharded_state(dataclasses.replace(cfg, dtype=dtype, attention=path), optim.from_config(config), mesh)
        out = []
        for _ in range(steps):
            state, metrics = train_step(state, x, y)
            out.append(float(metrics["loss"]))
        return out

    results = {"mesh": dict(mesh.shape), "float32_masked": losses("float32", "masked")}
    for path in ("masked", "fast"):
        results[f"bfloat16_{path}"] = losses("bfloat16", path)
    reference = np.asarray(results["float32_masked"])
    results["max_relative_loss_difference"] = max(
        float(np.max(np.abs(np.asarray(results[f"bfloat16_{path}"]) - reference) / reference))
        for path in ("masked", "fast"))
    results["passed"] = (all(math.isfinite(v) for key in ("bfloat16_masked", "bfloat16_fast") for v in results[key])
                         and results["max_relative_loss_difference"] < BF16_TOLERANCE
                         and results["bfloat16_fast"][-1] < results["bfloat16_fast"][0])
    return results


def data_check(config: ml_collections.ConfigDict, text_tokens: np.ndarray, steps: int) -> dict:
    """Milliseconds per train step of one model fed three ways, each after the last: one batch of
    random tokens every step (as bench.py times it), one batch of the text every step, and a new
    batch of the text every step, prefetched as the training loop feeds it. On a GPU a step whose
    gradient scatters into rows that real text repeats thousands of times ran 4x slower than on
    random tokens; the feeding is a host cost that an accelerator shows and a CPU hides."""
    mesh = sharding.make_mesh()
    vocab = int(text_tokens.max()) + 1
    random_tokens = np.random.default_rng(0).integers(0, vocab, len(text_tokens)).astype(text_tokens.dtype)
    state = sharded_state(model_config(config, vocab), optim.from_config(config), mesh)
    put = functools.partial(sharding.put_batch, mesh=mesh)
    random_batch, text_batch = (put(loop._train_batch(tokens, config, 0)) for tokens in (random_tokens, text_tokens))
    prefetched = data.prefetch((loop._train_batch(text_tokens, config, i) for i in itertools.count()), put)
    feeds = {"random_tokens": lambda: random_batch, "text": lambda: text_batch,
             "text_prefetched": lambda: next(prefetched)}
    results = {}
    for name, feed in feeds.items():
        for i in range(steps + 3):
            if i == 3:  # the first steps compile and warm up
                jax.block_until_ready(state)
                start = time.perf_counter()
            state, _ = train_step(state, *feed())
        jax.block_until_ready(state)
        results[f"{name}_ms"] = 1e3 * (time.perf_counter() - start) / steps
    return results


def embedding_gradient_check(vocab: int, width: int, tokens: int, repeats: int) -> dict:
    """Milliseconds of the gradient of the token embedding lookup (model.embed_tokens: for a vocabulary
    above ONE_HOT_MAX_VOCAB, a scatter-add of each token's gradient into its row of the table), for
    uniformly random tokens and for tokens as often repeated as in text (the r-th most frequent
    drawn with probability proportional to 1/r). Where a GPU's float32 atomic add is a
    compare-and-swap loop (environment.GPU_ATOMICS_FLAG), the text-like tokens queue on their
    frequent rows."""
    table = jax.random.normal(jax.random.key(0), (vocab, width), jnp.float32)
    cotangent = jax.random.normal(jax.random.key(1), (1, tokens, width), jnp.float32)
    rng = np.random.default_rng(0)
    by_rank = 1 / np.arange(1, vocab + 1)
    text_like = rng.choice(vocab, (1, tokens), p=by_rank / by_rank.sum())
    ids = {"uniform": rng.integers(0, vocab, (1, tokens)), "text_like": text_like}
    gradient = jax.jit(lambda table, ids: jax.vjp(lambda t: embed_tokens(t, ids), table)[1](cotangent)[0])
    results = {"table_VxC": [vocab, width], "tokens": tokens,
               "text_like_top_token_share": float(np.bincount(text_like.ravel()).max() / tokens)}
    for name, token_ids in ids.items():
        results[f"{name}_ms"] = 1e3 * median_seconds(
            functools.partial(gradient, table, jnp.asarray(token_ids, jnp.int32)), repeats)
    return results


def loss_gradient_check(batch: int, seq: int, vocab: int, repeats: int) -> dict:
    """Milliseconds and XLA's planned temporary memory of the loss and its gradient on bfloat16
    logits cast to float32 (as GPT.logits hands them over): step.cross_entropy, whose gradient is
    written out, against autodiff of optax's loss, which it replaced; and how far their gradients differ."""
    logits = (4 * jax.random.normal(jax.random.key(0), (batch, seq, vocab), jnp.float32)).astype(jnp.bfloat16)
    targets = jax.random.randint(jax.random.key(1), (batch, seq), 0, vocab)
    losses = {"written_out": cross_entropy,
              "autodiff": lambda logits, targets: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
                  logits, targets))}
    results, gradients = {"logits_BxTxV": [batch, seq, vocab]}, {}
    for name, loss in losses.items():
        compiled = jax.jit(jax.value_and_grad(lambda logits, targets, loss=loss: loss(
            logits.astype(jnp.float32), targets))).lower(logits, targets).compile()
        gradients[name] = np.float32(compiled(logits, targets)[1])
        results[f"{name}_ms"] = 1e3 * median_seconds(functools.partial(compiled, logits, targets), repeats)
        analysis = compiled.memory_analysis()
        results[f"{name}_temp_mib"] = analysis.temp_size_in_bytes / 2**20 if analysis is not None else None
    results["max_gradient_difference"] = float(np.max(np.abs(gradients["written_out"] - gradients["autodiff"])))
    return results


def char_data_check(tiny: bool, text_tokens: np.ndarray) -> dict:
    """data_check for the char recipe (tiny: a toy model)."""
    small = ["--config.n_layer=2", "--config.n_head=2", "--config.n_embd=64", "--config.block_size=64",
             "--config.batch_size=8"]
    config = from_command_line(["char", "--config", "char", *(small if tiny else [])])
    return data_check(config, text_tokens, 10 if tiny else 100)


def _guarded(check, *args) -> dict:
    """check(*args) with its wall time ("wall_s"), or {"error": ...} with its traceback printed: a
    check that crashes (a kernel this machine lacks) leaves the other checks' results."""
    start = time.perf_counter()
    try:
        result = check(*args)
    except Exception as e:
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"}
    return {**result, "wall_s": time.perf_counter() - start}


TIMINGS = ("embedding_gradient", "loss_gradient", "char_step_data")  # the checks that only time
CHECKS = ("attention", "train_step", *TIMINGS)


def failed_checks(results: dict) -> list[str]:
    """The checks in `checks`' results that failed or crashed: attention and train_step pass or
    fail (a crashed or missing one has no "passed"); the others only time, so they fail by crashing."""
    failed = [name for name in ("attention", "train_step") if not results.get(name, {}).get("passed")]
    return failed + [name for name in TIMINGS if "error" in results.get(name, {})]


def checks(tiny: bool, text_tokens: np.ndarray) -> dict:
    if tiny:
        shape, repeats = (2, 64, 2, 32), 2
        cfg, batch, steps = GPTConfig(block_size=64, vocab_size=512, n_layer=2, n_head=2, n_embd=64), 4, 3
        embedding, logits = (2 * ONE_HOT_MAX_VOCAB, 64, 256, 2), (2, 64, 512, 2)
    else:  # GPT-2 124M's attention shape and a small GPT-2-like model; GPT-2's table and micro-batch
        shape, repeats = (12, 1024, 12, 64), 20
        cfg, batch, steps = GPTConfig(block_size=1024, n_layer=4, n_head=12, n_embd=768), 8, 5
        embedding, logits = (GPTConfig.vocab_size, 768, 12 * 1024, 20), (12, 1024, GPTConfig.vocab_size, 20)
    device = jax.devices()[0]
    return {
        "device": f"{jax.device_count()} x {device.device_kind}", "backend": jax.default_backend(),
        "versions": {name: sys.modules[name].__version__ for name in ("jax", "jaxlib", "flax", "optax", "numpy")},
        "environment": environment.describe(),
        # Pallas's kernel on GPUs, and in its interpreter at toy sizes so that the code keeps working
        "attention": _guarded(attention_check, *shape, repeats, tiny or jax.default_backend() == "gpu"),
        "train_step": _guarded(train_step_check, cfg, batch, steps),
        "embedding_gradient": _guarded(embedding_gradient_check, *embedding),
        "loss_gradient": _guarded(loss_gradient_check, *logits),
        "char_step_data": _guarded(char_data_check, tiny, text_tokens),
    }


# nanoGPT's shakespeare_char result after its 5000 iterations (its README)
NANOGPT_CHAR_VAL_LOSS = 1.4697


def _wall_seconds(out_dir: Path) -> dict[str, float]:
    """Each stage's wall time in seconds and the whole check's (whole_check), as the script
    recorded them (OUT/wall_s.tsv)."""
    path = out_dir / "wall_s.tsv"
    lines = path.read_text().splitlines() if path.is_file() else []
    return {name: float(seconds) for name, seconds in (line.split("\t") for line in lines)}


def _run_summary(out_dir: Path, name: str) -> dict | None:
    """A whole train.py run of the check (OUT/NAME): losses, when it first reached nanoGPT's char
    val loss, and its steps' median time and MFU from metrics.jsonl (its wall time: _wall_seconds)."""
    metrics = out_dir / name / "metrics.jsonl"
    if not metrics.is_file():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    evaluations = [row for row in rows if "val_loss" in row]
    steps = [row for row in rows if "ms_per_iter" in row]
    return {
        "final_val_loss": evaluations[-1]["val_loss"] if evaluations else None,
        "best_val_loss": min((row["val_loss"] for row in evaluations), default=None),
        "iterations": evaluations[-1]["iter"] if evaluations else None,
        "first_iter_at_nanogpt_val_loss": next((row["iter"] for row in evaluations
                                                if row["val_loss"] <= NANOGPT_CHAR_VAL_LOSS), None),
        "median_ms_per_iter": float(np.median([row["ms_per_iter"] for row in steps])) if steps else None,
        "median_mfu": float(np.median([row["mfu"] for row in steps if "mfu" in row]))
        if any("mfu" in row for row in steps) else None,
    }


def _micro_batch(bench: dict) -> str:
    """The micro-batch size of a bench.py run, its JSON's argv read as bench.py read it; "?" without one."""
    return str(from_command_line(["bench.py", *bench["argv"]]).batch_size) if "argv" in bench else "?"


def summary(out_dir: Path) -> dict:
    """Everything the script's steps wrote, in one JSON file and one table."""
    report = {"wall_s": _wall_seconds(out_dir)}
    for name in ("checks", "bench_gpt2", "bench_gpt2_wide", "bench_gpt2_cublas"):
        path = out_dir / f"{name}.json"
        report[name] = json.loads(path.read_text()) if path.is_file() else None
    for name in ("char", "char_fast"):
        report[f"train_{name}"] = _run_summary(out_dir, name)
    (out_dir / "accelerator_check.json").write_text(json.dumps(report, indent=2) + "\n")

    c, b, w = report["checks"] or {}, report["bench_gpt2"] or {}, report["bench_gpt2_wide"] or {}
    cublas, wide_batch = report["bench_gpt2_cublas"] or {}, _micro_batch(w)
    a, s, e = c.get("attention", {}), c.get("train_step", {}), c.get("embedding_gradient", {})
    g, feeds = c.get("loss_gradient", {}), c.get("char_step_data", {})
    busiest = [f"{key.removeprefix('op_ms ')} {ms:.0f}" for key, ms in b.items() if key.startswith("op_ms ")][:5]
    rows = [
        ("device", c.get("device")), ("versions", " ".join(f"{k} {v}" for k, v in c.get("versions", {}).items())),
        ("attention: auto picks / fast runs cuDNN", f"{a.get('auto_picks')} / {a.get('fast_runs_cudnn')}"),
        ("attention bf16 error fwd, grad: masked", _pair(a.get("masked_forward_error"), a.get("masked_grad_error"))),
        ("attention bf16 error fwd, grad: fast", _pair(a.get("fast_forward_error"), a.get("fast_grad_error"))),
        ("attention bf16 error fwd, grad: pallas (a candidate)",
         _pair(a.get("pallas_forward_error"), a.get("pallas_grad_error")) if "pallas_crashed" not in a
         else f"crashed: {a['pallas_crashed'][:60]}"),
        ("attention fwd+bwd ms: masked / fast / pallas",
         _pair(a.get("masked_fwd_bwd_ms"), a.get("fast_fwd_bwd_ms"), a.get("pallas_fwd_bwd_ms"))),
        ("the same, calls back to back", _pair(*(a.get(f"{name}_fwd_bwd_ms_back_to_back")
                                                 for name in ("masked", "fast", "pallas")))),
        ("train step bf16 vs f32 loss difference", _pair(s.get("max_relative_loss_difference"))),
        ("embedding gradient ms: uniform / text-like tokens", _pair(e.get("uniform_ms"), e.get("text_like_ms"))),
        ("loss gradient ms: written out / autodiff", _pair(g.get("written_out_ms"), g.get("autodiff_ms"))),
        ("loss gradient temp MiB: written out / autodiff",
         _pair(g.get("written_out_temp_mib"), g.get("autodiff_temp_mib"))),
        ("char step ms: random tokens / text / text prefetched",
         _pair(*(feeds.get(f"{feed}_ms") for feed in ("random_tokens", "text", "text_prefetched")))),
        ("gpt2 bench: tokens/s", _pair(b.get("train_tokens_per_s"))),
        ("gpt2 bench: MFU", _pair(b.get("mfu"))),
        ("gpt2 bench: ms/iter, peak MiB", _pair(b.get("train_ms_per_iter"), b.get("device_peak_memory_mib"))),
        ("gpt2 step profiled: ms in XLA ops", _pair(b.get("profile_ops_ms"))),
        ("gpt2 step profiled: busiest ops, ms", ", ".join(busiest) or b.get("profile_error", "n/a")),
        (f"gpt2 bench, micro-batches of {wide_batch}: MFU, ms/iter", _pair(w.get("mfu"), w.get("train_ms_per_iter"))),
        (f"gpt2 bench, micro-batches of {wide_batch}: peak MiB", _pair(w.get("device_peak_memory_mib"))),
        ("gpt2 bench, cuBLAS matmuls only: MFU, ms/iter", _pair(cublas.get("mfu"), cublas.get("train_ms_per_iter"))),
    ]
    for name in ("char", "char_fast"):
        run = report[f"train_{name}"] or {}
        rows += [
            (f"{name}: iterations run", _pair(run.get("iterations"))),  # its wall time: train_NAME below
            (f"{name}: final / best val loss", _pair(run.get("final_val_loss"), run.get("best_val_loss"))),
            (f"{name}: median ms/iter, MFU", _pair(run.get("median_ms_per_iter"), run.get("median_mfu"))),
            (f"{name}: first iteration at val <= {NANOGPT_CHAR_VAL_LOSS}",
             _pair(run.get("first_iter_at_nanogpt_val_loss"))),
        ]
    for name, seconds in report["wall_s"].items():  # each stage (sample_char: its text is in its log), whole_check
        rows.append((f"wall s: {name}", _pair(round(seconds, 1))))
        if name == "checks":
            rows += [(f"wall s: checks: {check}", _pair(round(c[check]["wall_s"], 1)))
                     for check in CHECKS if "wall_s" in c.get(check, {})]
    for name, value in rows:
        print(f"{name:52s} {value}")
    failed = failed_checks(c)
    for name in failed:
        if "error" in c.get(name, {}):
            print(f"{name} crashed: {c[name]['error']}")
    print("checks passed" if not failed else f"checks FAILED: {', '.join(failed)}")
    return report


def _pair(*values) -> str:
    return " / ".join("n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in values)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("checks", "summary"))
    parser.add_argument("out", help="checks: the JSON file to write; summary: the check's output folder")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: seconds on a CPU")
    parser.add_argument("--text", type=Path, help="checks: a prepared char dataset's train.bin (uint16)")
    args = parser.parse_args(argv[1:])
    if args.what == "summary":
        summary(Path(args.out))
        return
    if args.text is None:
        parser.error("checks needs --text: a prepared char dataset's train.bin")
    results = checks(args.tiny, np.memmap(args.text, dtype=np.uint16, mode="r"))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    if failed_checks(results):
        sys.exit("accelerator check: a check failed (see above)")


if __name__ == "__main__":
    environment.start_program()
    main(sys.argv)
