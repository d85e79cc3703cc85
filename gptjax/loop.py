"""The training program: nanoGPT's loop around the step (data, evaluation, records, checkpoint
policy, the CPU time estimate)."""

import dataclasses
import functools
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from gptjax import attention, checkpoint, data, flops, hellaswag, optim, pretrained, sharding
from gptjax.config import model_config
from gptjax.errors import UsageError
from gptjax.model import GPT, GPTConfig
from gptjax.reporting import Reporter, TensorBoardSink, WandbSink
from gptjax.step import TrainState, eval_step, train_step
from gptjax.tokenizers import Tokenizer


def evaluate(state: TrainState, splits: dict, config: ml_collections.ConfigDict, it: int,
             mesh: Mesh) -> dict[str, float]:
    """Mean loss over eval_iters batches of each split, dropout off; the batches depend only on
    (seed, iteration), so an evaluation repeats exactly on resume."""
    losses = {}
    rows = sharding.process_rows(config.batch_size)
    put = functools.partial(sharding.put_batch, mesh=mesh)
    for split_index, (split, tokens) in enumerate(splits.items()):
        batches = (data.random_batch(tokens, config.batch_size, config.block_size, config.seed,
                                     1, split_index, it, k, rows=rows) for k in range(config.eval_iters))
        total = functools.reduce(jnp.add, (eval_step(state, x, y) for x, y in data.prefetch(batches, put)))
        losses[split] = float(total) / config.eval_iters
    return losses


@jax.jit
def _nonfinite_streak(streak: jax.Array, nonfinite: jax.Array) -> jax.Array:
    """How many steps in a row, up to this one, skipped their update: one dispatch per step, counted
    on the device, so that the loop never waits for a step to learn it."""
    return jnp.where(nonfinite, streak + 1, 0)


def _hellaswag_examples(config: ml_collections.ConfigDict) -> list[hellaswag.Example]:
    """The HellaSwag examples a run scores (none when hellaswag_interval is 0)."""
    if not config.hellaswag_interval:
        return []
    if config.tokenizer != "gpt2":
        raise UsageError("config.hellaswag_interval needs GPT-2's tokenizer (--config.tokenizer=gpt2): "
                         "HellaSwag is English text")
    if config.hellaswag_interval % config.eval_interval:
        raise UsageError(f"config.hellaswag_interval={config.hellaswag_interval} must be a multiple of "
                         f"eval_interval={config.eval_interval}: HellaSwag is scored at evaluations")
    path = hellaswag.find_file(config.hellaswag_file, config.data_dir)
    return hellaswag.read_examples(path, config.hellaswag_examples)


def _train_batch(tokens, config, it: int):
    """This process's rows of iteration it's batch, (B, T), or (A, B, T) for accumulation."""
    A, B = config.gradient_accumulation_steps, config.batch_size
    return data.random_batch(tokens, B if A == 1 else (A, B), config.block_size, config.seed, 0, it,
                             rows=sharding.process_rows(B))


def _format_duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _estimate_cpu_time(state: TrainState, splits: dict, config, it: int, report: Reporter, mesh) -> None:
    """On a CPU, time one train step and one eval batch, and say how long the run will take."""
    x, y = sharding.put_batch(_train_batch(splits["train"], config, it), mesh)
    # one jitted copy of the whole state (an eager copy compiles once per array shape); the
    # training loop then reuses train_step's compiled program
    scratch, _ = train_step(jax.jit(lambda s: jax.tree.map(jnp.copy, s))(state), x, y)  # donates only the copy
    x_eval, y_eval = (x, y) if x.ndim == 2 else (x[0], y[0])
    jax.block_until_ready(eval_step(state, x_eval, y_eval))  # compiles
    for _ in range(2):  # the first run after compiling is slow: keep the second's time
        start = time.perf_counter()
        scratch = jax.block_until_ready(train_step(scratch, x, y))[0]
        step_seconds = time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(eval_step(state, x_eval, y_eval))
        eval_seconds = time.perf_counter() - start
    n_evals = (config.max_iters - it) // config.eval_interval + 1
    total = (config.max_iters - it) * step_seconds + n_evals * 2 * config.eval_iters * eval_seconds
    report.message(
        f"No accelerator found: one training step takes {step_seconds:.2f} s and one eval batch "
        f"{eval_seconds:.2f} s here, so {_count(config.max_iters - it, 'iteration')} and "
        f"{_count(n_evals, 'evaluation')} will take about {_format_duration(total)}."
    )
    if total > 30 * 60:
        report.message("For a run of a few minutes on a CPU: python train.py --config configs/char_cpu.py")


# The model keys a run takes from the model it starts from (a checkpoint or GPT-2), as nanoGPT does.
_SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "bias", "block_size", *GPTConfig.ARCHITECTURE_FIELDS)


def _source_model(config: ml_collections.ConfigDict) -> tuple[str, GPTConfig | None]:
    """What a run starts from, in words, and the config of its model where that is not the
    config's own: the checkpoint to resume, or pretrained weights."""
    out_dir = Path(config.out_dir).absolute()
    if config.init_from == "scratch":
        return "scratch", None
    if config.init_from == "resume":  # every checkpoint of a run has the same model: any readable one says it
        step, meta = checkpoint.choose(out_dir, warn=lambda _: None)[0]
        return f"the checkpoint {out_dir}/checkpoints/{step}", GPTConfig(**meta["model"])
    return config.init_from, pretrained.pretrained_config(config.init_from)


def resolve_model_keys(config: ml_collections.ConfigDict, given: frozenset[str] = frozenset(),
                       ) -> tuple[ml_collections.ConfigDict, GPTConfig | None]:
    """A copy of config whose model shape keys are those of the model the run starts from (as
    nanoGPT reads them off a checkpoint or GPT-2), and that model's config (None from scratch). A
    key that the command line (`given`) sets to another value is refused. A pretrained model is
    cropped to a smaller block_size."""
    resolved = config.copy_and_resolve_references()
    source, source_cfg = _source_model(config)
    if source_cfg is None:
        return resolved, None
    shape = {key: getattr(source_cfg, key) for key in _SHAPE_KEYS}
    if config.init_from != "resume":
        shape["block_size"] = min(config.block_size, source_cfg.block_size)  # nanoGPT's crop
    differ = [key for key in _SHAPE_KEYS if key in given and config[key] != shape[key]]
    if differ:
        raise UsageError(
            f"{source} has " + ", ".join(f"{key}={shape[key]}" for key in differ) + " but the command line sets "
            + ", ".join(f"--config.{key}={config[key]}" for key in differ)
            + ": leave those options out, the model's shape and architecture come from what the run starts from")
    resolved.update(shape)
    return resolved, source_cfg


def _resumed_config(config: ml_collections.ConfigDict, tokenizer: Tokenizer, meta: dict) -> GPTConfig:
    """The model config of the checkpoint to resume, given its metadata: its architecture, GELU
    form included, with the config's dropout, attention, dtype and remat."""
    out_dir = Path(config.out_dir).absolute()
    if meta["tokenizer"] != tokenizer.describe():
        raise UsageError(f"the checkpoint in {out_dir} was trained with another tokenizer or vocabulary "
                         "than the dataset's: resume on the same data, or start a new out_dir")
    return dataclasses.replace(GPTConfig(**meta["model"]), dropout=config.dropout,
                               attention=config.attention, dtype=config.dtype, remat=config.remat)


def _new_state(config: ml_collections.ConfigDict, tokenizer: Tokenizer, tx: optax.GradientTransformation,
               mesh: Mesh) -> TrainState:
    """A new train state built straight into its shards on the mesh (sharding.jit_sharded): a
    randomly initialised model, or GPT-2's weights read into host memory and placed shard by
    shard, each with a fresh optimizer state."""
    if config.init_from == "scratch":
        # nanoGPT pads GPT-2's 50257 tokens to 50304 (GPTConfig's default) when training from scratch
        vocab_size = len(tokenizer) if config.tokenizer == "char" else GPTConfig.vocab_size
        return TrainState.new(model_config(config, vocab_size=vocab_size), tx, mesh, seed=config.seed)
    model = pretrained.from_pretrained(config.init_from, on_host=True, dropout=config.dropout,
                                       attention=config.attention, dtype=config.dtype, remat=config.remat)
    if model.cfg.vocab_size < len(tokenizer):
        raise UsageError(f"the dataset's tokenizer has {len(tokenizer)} tokens, more than the {model.cfg.vocab_size} "
                         f"of {config.init_from}: use its tokenizer (--config.tokenizer=gpt2)")
    if config.block_size < model.cfg.block_size:
        model = pretrained.crop_block_size(model, config.block_size)
    model.train()
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)
    params = sharding.place(params, sharding.state_shardings(params, mesh))
    make = lambda params: TrainState.create(nnx.merge(graphdef, params), tx, seed=config.seed)
    return sharding.jit_sharded(make, mesh, params)(params)


def _checkpoint_items(state: TrainState) -> dict:
    """The train state as the named pytrees of its checkpoint: each of its array fields."""
    return {field.name: getattr(state, field.name) for field in dataclasses.fields(state)
            if field.metadata.get("pytree_node", True)}


def _initial_state(config: ml_collections.ConfigDict, tokenizer: Tokenizer, mesh: Mesh,
                   warn: Callable[[str], None]) -> tuple[TrainState, float]:
    """The state a run starts from, placed on the mesh, and the best val loss so far. A resumed
    run starts from the newest checkpoint that can be read; newer ones that cannot are renamed
    aside (checkpoint.set_aside_newer), so that the run can write those steps again."""
    tx = optim.from_config(config)
    out_dir = Path(config.out_dir).absolute()
    if config.init_from == "resume":
        candidates = checkpoint.choose(out_dir, "newest", warn)
        model_cfg = _resumed_config(config, tokenizer, candidates[0][1])
        shapes = jax.eval_shape(lambda: TrainState.create(GPT(model_cfg, rngs=nnx.Rngs(0)), tx, config.seed))
        abstract = sharding.abstract_on_mesh(shapes, mesh)
        step, meta, items = checkpoint.restore_first(out_dir, candidates, _checkpoint_items(abstract), warn)
        for moved in checkpoint.set_aside_newer(out_dir, step):
            warn(f"renamed the unreadable checkpoint to {moved}")
        return abstract.replace(**items), meta["best_val_loss"]
    if (existing := checkpoint.latest_step(out_dir)) is not None:
        raise UsageError(
            f"{out_dir} already holds a checkpoint (iter {existing}) that this run would replace: pass "
            "--config.init_from=resume to continue it, or choose another out_dir"
        )
    return _new_state(config, tokenizer, tx, mesh), float("inf")


def _resolved_run(config: ml_collections.ConfigDict, mesh: Mesh) -> ml_collections.ConfigDict:
    """config as the run really is: the mesh's shape and the attention path that trains."""
    resolved = config.copy_and_resolve_references()
    resolved.mesh.data, resolved.mesh.fsdp = mesh.shape["data"], mesh.shape["fsdp"]
    resolved.attention = attention.resolve(config.attention, dropout_active=config.dropout > 0,
                                           dtype=jnp.dtype(config.dtype), head_dim=config.n_embd // config.n_head)
    return resolved


def _summary(config: ml_collections.ConfigDict, model_cfg: GPTConfig, source_cfg: GPTConfig | None, n_params: int,
             it: int, best_val_loss: float, tokenizer: Tokenizer, splits: dict) -> list[str]:
    """A few lines that say what is trained on what, how, and where it is written."""
    out_dir = Path(config.out_dir).absolute()
    size = f"{n_params / 1e6:.2f}M parameters" if n_params >= 1e6 else _count(n_params, "parameter")
    model = (f"{size}, {_count(model_cfg.n_layer, 'layer')}, {_count(model_cfg.n_head, 'head')}, "
             f"{model_cfg.n_embd} wide, block_size {model_cfg.block_size}, vocabulary {model_cfg.vocab_size:,}")
    if config.init_from == "resume":
        start = f"resuming {out_dir}/checkpoints/{it} (iter {it}, best val {best_val_loss:.4f}): {model}"
    elif config.init_from == "scratch":
        start = f"training a new GPT: {model}"
    else:
        start = f"starting from {config.init_from}: {model}"
        if source_cfg.block_size > model_cfg.block_size:
            start += f" (cropped from {source_cfg.block_size})"
    train_tokens, val_tokens = len(splits["train"]), len(splits["val"])
    work = ("evaluating once" if config.eval_only else
            f"iterations {it:,} to {config.max_iters:,} of {config.gradient_accumulation_steps} x "
            f"{config.batch_size} x {config.block_size} tokens, evaluating every {config.eval_interval:,}")
    return [
        start,
        f"data: {Path(config.data_dir).absolute() / config.dataset} ({tokenizer.describe()['kind']} tokens: "
        f"{train_tokens:,} train, {val_tokens:,} val)",
        f"on {jax.device_count()} x {jax.devices()[0].device_kind} (mesh data={config.mesh.data} "
        f"fsdp={config.mesh.fsdp}), {config.dtype}, {config.attention} attention; {work}",
        f"writing to {out_dir}: config.json (every setting, as resolved), metrics.jsonl, checkpoints/",
    ]


class StopRequest:
    """Turns SIGTERM (a scheduler, a preemption), SIGINT (Ctrl-C) and SIGUSR1 into a request that
    the training loop honours after the current step: it saves, flushes its records and returns.
    A second SIGINT aborts at once. Installed by the program (`with StopRequest() as stop:`), never
    by the library: signal handlers belong to the process."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def request(self, signum: int, frame=None) -> None:
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without saving
        self.signal = signal.SIGINT if signum == signal.SIGINT else self.signal or signum

    def __enter__(self) -> "StopRequest":
        self._previous = {signum: signal.signal(signum, self.request) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# In a multi-host run the processes agree every this many steps whether to stop or save (a signal
# reaches each at a different step; one small all-gather, so not every step).
SYNC_STEPS = 10


def _agree(wishes: list[bool]) -> list[bool]:
    """Each wish, True if any process has it: the same answer on every process."""
    if jax.process_count() == 1:
        return wishes
    return [bool(w) for w in multihost_utils.process_allgather(np.array(wishes)).reshape(-1, len(wishes)).any(0)]


def _set_records_aside(path: Path, it: int) -> Path | None:
    """Move metrics.jsonl's rows of iterations >= it (written after the checkpoint a run resumes
    from, by a run that went on or was killed) to metrics.past-<it>.jsonl: the records then read
    as one run. Returns that file, or None when there were none."""
    if not path.is_file():
        return None
    kept, past = [], []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        (past if json.loads(line).get("iter", -1) >= it else kept).append(line)
    if not past:
        return None
    aside = path.with_name(f"metrics.past-{it}.jsonl")
    with open(aside, "a", encoding="utf-8") as f:
        f.writelines(past)
    path.write_text("".join(kept), encoding="utf-8")
    return aside


def train(config: ml_collections.ConfigDict, given: frozenset[str] = frozenset(),
          stop: StopRequest | None = None) -> dict[str, float]:
    """Train as the config says (nanoGPT's semantics); `given` names the keys the command line set
    (see resolve_model_keys); `stop`, when a signal set it, ends the run early with a checkpoint.
    Returns the last evaluation's losses."""
    started = time.perf_counter()
    main_process = jax.process_index() == 0  # the one that prints and writes files; all save checkpoints
    warn = functools.partial(print, file=sys.stderr, flush=True) if main_process else lambda _: None
    config, source_cfg = resolve_model_keys(config, given)
    out_dir = Path(config.out_dir).absolute()
    hellaswag_examples = _hellaswag_examples(config)
    load = functools.partial(
        data.load_dataset, config.data_dir, config.dataset, config.input_file, config.block_size, config.tokenizer,
        rebuild=config.rebuild_data, announce=functools.partial(print, flush=True) if main_process else None,
        val_fraction=config.val_fraction, text_key=config.text_key, num_proc=config.num_proc)
    # The first process prepares the data; the others read it once it is there (on a shared disk;
    # a host with its own disk prepares its own copy then, with no one else writing it).
    tokenizer, splits = load() if main_process else (None, None)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("gptjax: the dataset is prepared")
        if not main_process:
            tokenizer, splits = load(rebuild=False)
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    if config.batch_size % mesh.size:
        raise UsageError(f"config.batch_size={config.batch_size} must be a multiple of the {mesh.size} devices "
                         "it is split across")
    state, best_val_loss = _initial_state(config, tokenizer, mesh, warn)
    model = state.model()
    model_cfg, n_params = model.cfg, model.num_params()
    it = int(state.step)
    config = _resolved_run(config, mesh)

    out_dir.mkdir(parents=True, exist_ok=True)
    if main_process:
        record = {**config.to_dict(), "vocab_size": model_cfg.vocab_size}
        (out_dir / "config.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        if config.init_from == "resume" and (aside := _set_records_aside(out_dir / "metrics.jsonl", it)):
            warn(f"metrics.jsonl had rows past iteration {it}, the checkpoint resumed: moved to {aside}")
    sinks = []
    if main_process and config.wandb_log:
        sinks.append(WandbSink(out_dir, config.wandb_project, config.wandb_run_name, config.to_dict()))
    if main_process and config.tensorboard_dir:
        sinks.append(TensorBoardSink(Path(config.tensorboard_dir).absolute()))
    report = Reporter(out_dir / "metrics.jsonl", start=it, total=config.max_iters, active=main_process,
                      sinks=tuple(sinks))
    for line in _summary(config, model_cfg, source_cfg, n_params, it, best_val_loss, tokenizer, splits):
        report.message(line)
    if jax.default_backend() == "cpu" and not config.eval_only and it < config.max_iters:
        _estimate_cpu_time(state, splits, config, it, report, mesh)

    tokens_per_iter = config.gradient_accumulation_steps * config.batch_size * config.block_size
    batches = data.prefetch((_train_batch(splits["train"], config, i) for i in range(it, config.max_iters)),
                            functools.partial(sharding.put_batch, mesh=mesh))
    pending = None  # (iteration, metrics) of the step whose results are not yet read back
    clock, clock_iter = time.perf_counter(), it
    checkpoints = checkpoint.Writer(out_dir, config.keep_checkpoints, config.async_checkpointing)
    saved_iter = it if config.init_from == "resume" else None  # the step of the newest checkpoint written
    checkpoint_interval = config.checkpoint_interval or config.eval_interval
    last_save = time.monotonic()

    def log_pending():
        nonlocal pending, clock, clock_iter
        if pending is None:
            return
        step_it, metrics, streak = pending
        pending = None
        metrics, streak = jax.device_get((metrics, streak))
        values = {k: float(v) for k, v in metrics.items() if k != "nonfinite"}
        if config.log_health and config.grad_clip:
            values["clipped"] = values["grad_norm"] > config.grad_clip  # this step's gradient was scaled down
        if metrics["nonfinite"]:  # records stay valid JSON: null, never NaN
            values = {k: v if math.isfinite(v) else None for k, v in values.items()} | {"nonfinite": True}
        now = time.perf_counter()
        seconds = (now - clock) / max(step_it + 1 - clock_iter, 1)  # per step since the last log
        clock, clock_iter = now, step_it + 1
        values.update(ms_per_iter=seconds * 1e3, tokens_per_s=tokens_per_iter / seconds)
        if (utilisation := flops.mfu(model_cfg, n_params, tokens_per_iter / seconds)) is not None:
            values["mfu"] = utilisation
        report.log_step(step_it, values)
        if streak >= config.max_nonfinite_steps:
            newest = f"{out_dir}/checkpoints/{saved_iter}" if saved_iter is not None else "none"
            raise UsageError(f"stopped at iteration {step_it}: {streak} steps in a row had a non-finite loss or "
                             f"gradient and skipped their updates (config.max_nonfinite_steps); the newest checkpoint: "
                             f"{newest}. Lower learning_rate or look at the data, then resume")

    def save(why: str, val_loss: float | None = None):
        nonlocal saved_iter, last_save, clock, clock_iter
        log_pending()
        save_started = time.perf_counter()
        meta = {"iter": it, "best_val_loss": float(best_val_loss), "config": config.to_dict(),
                "model": dataclasses.asdict(model_cfg), "tokenizer": tokenizer.describe()}
        checkpoints.save(it, _checkpoint_items(state), meta, val_loss)
        seconds["saving checkpoints"] += time.perf_counter() - save_started
        saved_iter, last_save = it, time.monotonic()
        clock, clock_iter = time.perf_counter(), it  # saving time is not step time
        report.message(f"saved checkpoint to {out_dir}/checkpoints/{it} ({why})")

    losses, streak = {}, jnp.zeros((), jnp.int32)
    seconds = {"setting up (data, model, compiling, the CPU estimate)": time.perf_counter() - started,
               "training": 0.0, "evaluating": 0.0, "saving checkpoints": 0.0}  # where the run's time goes
    try:
        while True:
            if it % config.eval_interval == 0 or config.eval_only:
                log_pending()
                evaluation_started = time.perf_counter()
                losses = evaluate(state, splits, config, it, mesh)
                report.message(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                report.record(iter=it, train_loss=losses["train"], val_loss=losses["val"])
                if hellaswag_examples and (it % config.hellaswag_interval == 0 or config.eval_only):
                    scores = hellaswag.evaluate(state.model(), hellaswag_examples, tokenizer.encode)
                    report.message(f"step {it}: HellaSwag acc_norm {scores['acc_norm']:.4f}, acc {scores['acc']:.4f} "
                                   f"({scores['examples']:,} examples)")
                    report.record(iter=it, hellaswag_acc_norm=scores["acc_norm"], hellaswag_acc=scores["acc"])
                improved = losses["val"] < best_val_loss
                best_val_loss = min(best_val_loss, losses["val"])
                seconds["evaluating"] += time.perf_counter() - evaluation_started
                if config.eval_only:
                    break
                if (improved or config.always_save_checkpoint or it % checkpoint_interval == 0) and it != saved_iter:
                    save("the best val loss so far" if improved else "the newest", losses["val"])
                clock, clock_iter = time.perf_counter(), it  # evaluation time is not step time
            elif it % checkpoint_interval == 0 and it != saved_iter:
                save("checkpoint_interval")
            if it >= config.max_iters:
                if it != saved_iter:
                    save("the end of training")
                break
            if jax.process_count() == 1 or it % SYNC_STEPS == 0:
                stopping, timely = _agree([stop is not None and stop.signal is not None, config.checkpoint_minutes > 0
                                           and time.monotonic() - last_save >= 60 * config.checkpoint_minutes])
                if stopping or (timely and it != saved_iter):
                    if it != saved_iter:
                        save(("another process was signalled" if stop is None or stop.signal is None else
                              f"{signal.Signals(stop.signal).name} received") if stopping else "checkpoint_minutes")
                    if stopping:
                        report.message(f"stopped at iteration {it} on request")
                        break
            x, y = next(batches)
            state, metrics = train_step(state, x, y, with_health=config.log_health)
            streak = _nonfinite_streak(streak, metrics["nonfinite"])
            log_pending()  # read step it-1 back while step it runs
            if it % config.log_interval == 0:
                pending = (it, metrics, streak)
            it += 1
        log_pending()
        waited = time.perf_counter()
        checkpoints.wait()
        seconds["saving checkpoints"] += time.perf_counter() - waited
        total = time.perf_counter() - started
        seconds["training"] = total - sum(seconds.values())
        report.message(f"done in {total:.1f} s: " + ", ".join(f"{s:.1f} s {what}" for what, s in seconds.items()))
    finally:
        try:
            checkpoints.close()
        finally:
            report.close()
    return losses
