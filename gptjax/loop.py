"""The training program: nanoGPT's loop around the step (data, evaluation, records, checkpoint
policy, the CPU time estimate)."""

import contextlib
import dataclasses
import functools
import itertools
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gptjax import attention, checkpoint, data, environment, flops, hellaswag, prepare, sharding, start
from gptjax.errors import UsageError
from gptjax.lock import RunLock
from gptjax.model import GPTConfig
from gptjax.reporting import Reporter, TensorBoardSink, WandbSink
from gptjax.step import TrainState, eval_totals, train_step
from gptjax.stopping import StopRequest
from gptjax.tokenizers import Tokenizer, token_bytes


def evaluate(state: TrainState, splits: dict, config: ml_collections.ConfigDict, mesh: Mesh,
             token_bytes_V: jax.Array, stopping: Callable[[], bool] = lambda: False) -> dict[str, float] | None:
    """Mean loss ("train", "val") and bits per byte ("train_bpb", "val_bpb": the summed loss in bits
    over the UTF-8 bytes of the target tokens, which runs with different tokenizers share) over
    eval_iters batches of each split, dropout off. The batches depend only on the seed: every
    evaluation of a run scores the same text, so evaluations compare and a resumed run repeats one
    exactly. `stopping` is asked between batches; when it says True the evaluation is abandoned
    (None)."""
    results = {}
    rows = sharding.process_rows(config.batch_size)
    put = functools.partial(sharding.put_batch, mesh=mesh)
    for split_index, (split, tokens) in enumerate(splits.items()):
        batches = (data.random_batch(tokens, config.batch_size, config.block_size, config.seed,
                                     1, split_index, k, rows=rows) for k in range(config.eval_iters))
        totals = None
        for x, y in data.prefetch(batches, put):
            if stopping():
                return None
            batch_totals = eval_totals(state, x, y, token_bytes_V)
            # one batch queued behind the one running: a stop is seen within a batch, at no cost
            # (docs/performance.md#evaluations-a-stop-can-interrupt)
            totals = batch_totals if totals is None else jax.tree.map(jnp.add, jax.block_until_ready(totals),
                                                                      batch_totals)
        loss, nats, n_bytes = totals
        results[split] = float(loss) / config.eval_iters
        results[f"{split}_bpb"] = float(nats) / math.log(2) / max(int(n_bytes), 1)
    return results


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

    def read() -> list[hellaswag.Example]:  # downloads the file where it is not there yet
        return hellaswag.read_examples(hellaswag.find_file(config.hellaswag_file, config.data_dir),
                                       config.hellaswag_examples)

    return sharding.main_process_first("reading HellaSwag", read, read)


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


def _estimate_cpu_time(state: TrainState, splits: dict, config, it: int, say: Callable[[str], None], mesh,
                       token_bytes_V: jax.Array) -> None:
    """On a CPU, time one train step and one eval batch (as evaluate runs it), and say how long the
    run will take."""
    x, y = sharding.put_batch(_train_batch(splits["train"], config, it), mesh)
    # one jitted copy of the whole state (an eager copy compiles once per array shape); the
    # training loop then reuses train_step's compiled program
    scratch, _ = train_step(jax.jit(lambda s: jax.tree.map(jnp.copy, s))(state), x, y)  # donates only the copy
    x_eval, y_eval = (x, y) if x.ndim == 2 else (x[0], y[0])
    jax.block_until_ready(eval_totals(state, x_eval, y_eval, token_bytes_V))  # compiles
    for _ in range(2):  # the first run after compiling is slow: keep the second's time
        start = time.perf_counter()
        scratch = jax.block_until_ready(train_step(scratch, x, y))[0]
        step_seconds = time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(eval_totals(state, x_eval, y_eval, token_bytes_V))
        eval_seconds = time.perf_counter() - start
    n_evals = (config.max_iters - it) // config.eval_interval + 1
    total = (config.max_iters - it) * step_seconds + n_evals * 2 * config.eval_iters * eval_seconds
    say(
        f"No accelerator found: one training step takes {step_seconds:.2f} s and one eval batch "
        f"{eval_seconds:.2f} s here, so {_count(config.max_iters - it, 'iteration')} and "
        f"{_count(n_evals, 'evaluation')} will take about {_format_duration(total)}."
    )
    if total > 30 * 60:
        say("For a run of a few minutes on a CPU: python train.py --config configs/char_cpu.py")


def _too_little_data(config: ml_collections.ConfigDict, n_params: int, n_train: int) -> str | None:
    """A warning for a model trained from scratch on so few tokens that it can only memorise them:
    fewer than 10 iterations' worth, or 20 parameters or more to each token; None otherwise."""
    tokens_per_iter = config.gradient_accumulation_steps * config.batch_size * config.block_size
    if config.init_from != "scratch" or (n_train >= 10 * tokens_per_iter and 20 * n_train > n_params):
        return None
    return (f"the training split has only {n_train:,} tokens for {_count(n_params, 'parameter')} ("
            f"{n_train / tokens_per_iter:.1f} iterations' worth): the model will memorise it rather than learn to "
            "continue such text; give a longer text (a few hundred thousand characters or more), or a smaller model "
            "(--config.n_layer, --config.n_embd)")


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
        f"data: {Path(splits['train'].filename).parent} ({tokenizer.describe()['kind']} tokens: "
        f"{train_tokens:,} train, {val_tokens:,} val)",
        f"on {jax.device_count()} x {jax.devices()[0].device_kind} (mesh data={config.mesh.data} "
        f"fsdp={config.mesh.fsdp}), {config.dtype}, {config.attention} attention; {work}",
        f"writing to {out_dir}: config.json (every setting, as resolved), metrics.jsonl, checkpoints/",
    ]


# In a multi-host run the processes agree every this many steps whether to stop or save (a signal
# reaches each at a different step; one small all-gather, so not every step).
SYNC_STEPS = 10


def _agree(wishes: list[bool]) -> list[bool]:
    """Each wish, True if any process has it: the same answer on every process."""
    if jax.process_count() == 1:
        return wishes
    return [bool(w) for w in multihost_utils.process_allgather(np.array(wishes)).reshape(-1, len(wishes)).any(0)]


_EVALUATION_KEYS = {"val_loss", "hellaswag_acc_norm"}  # the keys that make a metrics.jsonl row an evaluation's


def _set_records_aside(path: Path, it: int) -> Path | None:
    """Move metrics.jsonl's rows of iterations >= it (written after the checkpoint a run resumes
    from, by a run that went on or was killed) to metrics.past-<it>.jsonl: the records then read
    as one run. Returns that file, or None when nothing was set aside. Where those rows are only
    the evaluation of iteration it (a run that finished or stopped there), they are removed
    instead: the resumed run repeats that evaluation exactly, from the same state on the same
    batches."""
    if not path.is_file():
        return None
    kept, past = [], []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            row = json.loads(line)
            after = row.get("iter", -1) >= it
        except json.JSONDecodeError:  # a row cut short by a kill or a full disk: set aside too
            row, after, line = {}, True, line.rstrip("\n") + "\n"
        (past if after else kept).append((row, line))
    if not past:
        return None
    path.write_text("".join(line for _, line in kept), encoding="utf-8")
    if all(row.get("iter") == it and _EVALUATION_KEYS & row.keys() for row, _ in past):
        return None
    aside = path.with_name(f"metrics.past-{it}.jsonl")
    with open(aside, "a", encoding="utf-8") as f:
        f.writelines(line for _, line in past)
    return aside


def _load_data(config: ml_collections.ConfigDict, main_process: bool,
               stop: StopRequest | None) -> tuple[Tokenizer, dict]:
    """The dataset's tokenizer and its {"train", "val"} tokens, prepared on first use. The first
    process prepares the data; the others read it once it is there (on a shared disk; a host with
    its own disk prepares its own copy then, with no one else writing it). A signal stops the
    preparation after its current task, keeping its work for the next run."""
    with stop.only_asking() if stop is not None else contextlib.nullcontext() as stopped:
        def load(rebuild: bool) -> tuple[Tokenizer, dict]:
            tokenizer, meta, folder = prepare.prepare_dataset(
                config.data_dir, config.dataset, config.input_file, config.tokenizer, rebuild=rebuild,
                announce=functools.partial(print, flush=True) if main_process else None,
                val_fraction=config.val_fraction, text_key=config.text_key, num_proc=config.num_proc,
                bpe_vocab_size=config.bpe_vocab_size, stopped=stopped)
            return tokenizer, data.read_splits(folder, meta, config.block_size)

        return sharding.main_process_first("preparing the dataset", lambda: load(config.rebuild_data),
                                           lambda: load(False))


def _open_records(config: ml_collections.ConfigDict, it: int, vocab_size: int, main_process: bool,
                  warn: Callable[[str], None]) -> Reporter:
    """The run's records in out_dir, written by the main process only: config.json (every setting,
    as resolved), metrics.jsonl (its rows past a resumed checkpoint set aside) and the wandb and
    TensorBoard sinks, behind one Reporter."""
    out_dir = Path(config.out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not main_process:
        return Reporter(out_dir / "metrics.jsonl", start=it, total=config.max_iters, active=False)
    record = {**config.to_dict(), "vocab_size": vocab_size, "environment": environment.settings()}
    (out_dir / "config.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    if config.init_from == "resume" and (aside := _set_records_aside(out_dir / "metrics.jsonl", it)):
        warn(f"metrics.jsonl had rows past iteration {it}, the checkpoint resumed: moved to {aside}")
    sinks = []
    if config.wandb_log:
        sinks.append(WandbSink(out_dir, config.wandb_project, config.wandb_run_name, config.to_dict()))
    if config.tensorboard_dir:
        sinks.append(TensorBoardSink(Path(config.tensorboard_dir).absolute()))
    return Reporter(out_dir / "metrics.jsonl", start=it, total=config.max_iters, sinks=tuple(sinks))


def train(config: ml_collections.ConfigDict, given: frozenset[str] = frozenset(),
          stop: StopRequest | None = None) -> dict[str, float]:
    """Train as the config says (nanoGPT's semantics); `given` names the keys the command line set
    (see start.resolve_model_keys); `stop`, when a signal set it, ends the run early with a checkpoint.
    The run holds out_dir's lock (lock.RunLock) throughout; nothing else is written to out_dir until
    the training loop begins. Returns the last evaluation's losses."""
    started = time.perf_counter()
    main_process = jax.process_index() == 0  # the one that prints and writes files; all save checkpoints
    warn = functools.partial(print, file=sys.stderr, flush=True) if main_process else lambda _: None
    say = functools.partial(print, flush=True) if main_process else lambda _: None
    run_lock = RunLock(config.out_dir)
    sharding.main_process_first("taking the lock of out_dir", lambda: run_lock.acquire(warn), lambda: None)
    if stop is not None:
        stop.undo_on_exit(run_lock.release)  # a new out_dir is removed again, whatever stops the start
    try:
        # every refusal before any work: nothing is prepared, compiled or written for a refused run
        start.refuse_before_work(config)
        config, source_cfg = start.resolve_model_keys(config, given)
        mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
        if config.batch_size % mesh.size:
            raise UsageError(f"config.batch_size={config.batch_size} must be a multiple of the {mesh.size} devices "
                             "it is split across")
        hellaswag_examples = _hellaswag_examples(config)
        tokenizer, splits = _load_data(config, main_process, stop)
        state, best_val_loss = start.initial_state(config, tokenizer, mesh, warn)
        config = _resolved_run(config, mesh)
        run = _Run(config, state, best_val_loss, tokenizer, splits, mesh, hellaswag_examples)
        for line in _summary(config, run.model_cfg, source_cfg, run.n_params, run.it, best_val_loss, tokenizer,
                             splits):
            say(line)
        if not config.eval_only and (too_little := _too_little_data(config, run.n_params, len(splits["train"]))):
            warn(too_little)
        if jax.default_backend() == "cpu" and not config.eval_only and run.it < config.max_iters:
            _estimate_cpu_time(state, splits, config, run.it, say, mesh, run.token_bytes)
        if stop is not None:
            stop.started()
        return run.loop(stop, started, warn)
    finally:
        run_lock.release()


class _Run:
    """A run from its first iteration to its end, nanoGPT's loop: evaluate every eval_interval
    (and save), save on checkpoint_interval, checkpoint_minutes or a stop request, and step until
    max_iters. Each step's metrics are read back while the next step runs, so that the loop never
    waits for the device."""

    def __init__(self, config: ml_collections.ConfigDict, state: TrainState, best_val_loss: float,
                 tokenizer: Tokenizer, splits: dict, mesh: Mesh, hellaswag_examples: list[hellaswag.Example]):
        self.config, self.state, self.best_val_loss = config, state, best_val_loss
        self.tokenizer, self.splits, self.mesh, self.hellaswag_examples = tokenizer, splits, mesh, hellaswag_examples
        model = state.model()
        self.model_cfg, self.n_params = model.cfg, model.num_params()
        # each token's UTF-8 bytes, for bits per byte; on every device of the mesh, as the parameters are
        self.token_bytes = jax.device_put(token_bytes(tokenizer), NamedSharding(mesh, PartitionSpec()))
        self.out_dir = Path(config.out_dir).absolute()
        self.it = int(state.step)
        self.checkpoints: checkpoint.Writer | None = None  # open while the loop runs
        self.saved_iter = self.it if config.init_from == "resume" else None  # the newest checkpoint written
        self.streak = jnp.zeros((), jnp.int32)  # steps in a row that skipped their update, on the device
        self.pending = None  # (iteration, metrics, streak) of the step whose results are not yet read back
        self.tokens_per_iter = config.gradient_accumulation_steps * config.batch_size * config.block_size
        self.checkpoint_interval = config.checkpoint_interval or config.eval_interval

    def restart_clock(self) -> None:
        """Step time is measured from here: evaluating and saving are not step time."""
        self.clock, self.clock_iter = time.perf_counter(), self.it

    def loop(self, stop: StopRequest | None, started: float, warn: Callable[[str], None]) -> dict[str, float]:
        """Opens the run's records and runs to max_iters (or one evaluation with eval_only, or a
        stop request); returns the last evaluation's losses. `started`: the run's start
        (time.perf_counter())."""
        self.report = _open_records(self.config, self.it, self.model_cfg.vocab_size, jax.process_index() == 0, warn)
        try:
            return self._loop(stop, started)
        finally:
            self.report.close()

    def _loop(self, stop: StopRequest | None, started: float) -> dict[str, float]:
        config, losses = self.config, {}
        self.seconds = {"setting up (data, model, compiling, the CPU estimate)": time.perf_counter() - started,
                        "training": 0.0, "evaluating": 0.0, "saving checkpoints": 0.0}  # where the run's time goes
        batches = data.prefetch((_train_batch(self.splits["train"], config, i)
                                 for i in range(self.it, config.max_iters)),
                                functools.partial(sharding.put_batch, mesh=self.mesh))
        self.checkpoints = checkpoint.Writer(self.out_dir, config.keep_checkpoints, config.async_checkpointing)
        self.last_save = time.monotonic()
        self.restart_clock()
        with self.checkpoints:
            while True:
                if self.it % config.eval_interval == 0 or config.eval_only:
                    evaluated = self.evaluate_and_save(stop)
                    if evaluated is None:  # abandoned: a stop was requested while evaluating
                        self.stop(stop)
                        break
                    losses = evaluated
                    if config.eval_only:
                        break
                elif self.it % self.checkpoint_interval == 0 and self.it != self.saved_iter:
                    self.save("checkpoint_interval")
                if self.it >= config.max_iters:
                    if self.it != self.saved_iter:
                        self.save("the end of training")
                    break
                if (jax.process_count() == 1 or self.it % SYNC_STEPS == 0) and self.save_or_stop(stop):
                    break
                x, y = next(batches)
                self.state, metrics = train_step(self.state, x, y, with_health=config.log_health)
                self.streak = _nonfinite_streak(self.streak, metrics["nonfinite"])
                self.log_pending()  # read step it-1 back while step it runs
                if self.it % config.log_interval == 0:
                    self.pending = (self.it, metrics, self.streak)
                self.it += 1
            self.log_pending()
            waited = time.perf_counter()
            self.checkpoints.wait()
            self.seconds["saving checkpoints"] += time.perf_counter() - waited
            total = time.perf_counter() - started
            self.seconds["training"] = total - sum(self.seconds.values())
            self.report.end_progress()  # its last frame above the closing line, not below it
            self.report.message(f"done in {total:.1f} s: "
                                + ", ".join(f"{s:.1f} s {what}" for what, s in self.seconds.items()))
        return losses

    def evaluate_and_save(self, stop: StopRequest | None) -> dict[str, float] | None:
        """Evaluates (HellaSwag too at its interval), reports the losses, and saves a checkpoint
        when they improved or the config asks for one. None: a stop request came while evaluating,
        and the evaluation was abandoned (its losses not reported)."""
        config, it = self.config, self.it
        self.log_pending()
        evaluation_started = time.perf_counter()
        stopping = self.stop_requested(stop)
        losses = evaluate(self.state, self.splits, config, self.mesh, self.token_bytes, stopping)
        if losses is None:
            self.seconds["evaluating"] += time.perf_counter() - evaluation_started
            return None
        finite = all(math.isfinite(loss) for loss in losses.values())
        self.report.message(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
                            f"val bpb {losses['val_bpb']:.4f}"
                            + ("" if finite else " (not finite: the model has diverged, so this is never the best)"))
        self.report.record(iter=it, train_loss=losses["train"], val_loss=losses["val"],
                           train_bpb=losses["train_bpb"], val_bpb=losses["val_bpb"])
        if self.hellaswag_examples and (it % config.hellaswag_interval == 0 or config.eval_only):
            scores = hellaswag.evaluate(self.state.model(), self.hellaswag_examples, self.tokenizer.encode, stopping)
            if scores is None:
                self.seconds["evaluating"] += time.perf_counter() - evaluation_started
                return None
            self.report.message(f"step {it}: HellaSwag acc_norm {scores['acc_norm']:.4f}, acc {scores['acc']:.4f} "
                                f"({scores['examples']:,} examples)")
            self.report.record(iter=it, hellaswag_acc_norm=scores["acc_norm"], hellaswag_acc=scores["acc"])
        improved = losses["val"] < self.best_val_loss
        self.best_val_loss = min(self.best_val_loss, losses["val"])
        self.seconds["evaluating"] += time.perf_counter() - evaluation_started
        if config.eval_only:
            return losses
        wanted = improved or config.always_save_checkpoint or it % self.checkpoint_interval == 0
        if wanted and it != self.saved_iter:
            self.save("the best val loss so far" if improved else "the newest", losses["val"])
        self.restart_clock()
        return losses

    def save_or_stop(self, stop: StopRequest | None) -> bool:
        """Saves when a process was asked to stop, or checkpoint_minutes have passed; True: stop now.
        Every process gets the same answer (_agree)."""
        config = self.config
        timely = config.checkpoint_minutes > 0 and time.monotonic() - self.last_save >= 60 * config.checkpoint_minutes
        signalled = stop is not None and stop.signal is not None
        stopping, timely = _agree([signalled, timely])
        if stopping:
            self.stop(stop)
        elif timely and self.it != self.saved_iter:
            self.save("checkpoint_minutes")
        return stopping

    def stop_requested(self, stop: StopRequest | None) -> Callable[[], bool]:
        """Whether a stop was requested, asked between the batches of an evaluation: the same answer
        on every process, which agree every SYNC_STEPS batches in a multi-host run."""
        asked = itertools.count()

        def stopping() -> bool:
            signalled = stop is not None and stop.signal is not None
            if jax.process_count() == 1:
                return signalled
            return next(asked) % SYNC_STEPS == 0 and _agree([signalled])[0]

        return stopping

    def stop(self, stop: StopRequest | None) -> None:
        """Ends the run on a stop request: saves the state of the last completed step where the
        newest checkpoint is older, and says what there is to resume."""
        signalled = stop is not None and stop.signal is not None
        if self.it != self.saved_iter and not self.config.eval_only:
            self.save(stop.reason() if signalled else "another process was signalled")
        self.report.end_progress()
        if self.config.eval_only:
            self.report.message("stopped on request: the evaluation was abandoned (eval_only saves no checkpoint)")
        else:
            self.report.message(f"stopped at iteration {self.it} on request: {self.out_dir}/checkpoints/{self.it} "
                                "holds it, and --config.init_from=resume continues from there")

    def save(self, why: str, val_loss: float | None = None) -> None:
        """A checkpoint of this iteration (in the background where the config says so)."""
        self.log_pending()
        save_started = time.perf_counter()
        meta = {"iter": self.it, "best_val_loss": float(self.best_val_loss), "config": self.config.to_dict(),
                "model": dataclasses.asdict(self.model_cfg), "tokenizer": self.tokenizer.describe()}
        self.checkpoints.save(self.it, start.checkpoint_items(self.state), meta, val_loss)
        self.seconds["saving checkpoints"] += time.perf_counter() - save_started
        self.saved_iter, self.last_save = self.it, time.monotonic()
        self.restart_clock()
        self.report.message(f"saved checkpoint to {self.out_dir}/checkpoints/{self.it} ({why})")

    def log_pending(self) -> None:
        """Reads back the pending step's metrics and logs them with its speed; stops the run after
        max_nonfinite_steps skipped updates in a row."""
        if self.pending is None:
            return
        config = self.config
        step_it, metrics, streak = self.pending
        self.pending = None
        metrics, streak = jax.device_get((metrics, streak))
        values = {k: float(v) for k, v in metrics.items() if k != "nonfinite"}
        if config.log_health and config.grad_clip:
            values["clipped"] = values["grad_norm"] > config.grad_clip  # this step's gradient was scaled down
        if metrics["nonfinite"]:
            values["nonfinite"] = True
        now = time.perf_counter()
        seconds = (now - self.clock) / max(step_it + 1 - self.clock_iter, 1)  # per step since the last log
        self.clock, self.clock_iter = now, step_it + 1
        values.update(ms_per_iter=seconds * 1e3, tokens_per_s=self.tokens_per_iter / seconds)
        if (utilisation := flops.mfu(self.model_cfg, self.n_params, self.tokens_per_iter / seconds)) is not None:
            values["mfu"] = utilisation
        self.report.log_step(step_it, values)
        if streak >= config.max_nonfinite_steps:
            newest = f"{self.out_dir}/checkpoints/{self.saved_iter}" if self.saved_iter is not None else "none"
            raise UsageError(f"stopped at iteration {step_it}: {streak} steps in a row had a non-finite loss or "
                             f"gradient and skipped their updates (config.max_nonfinite_steps); the newest checkpoint: "
                             f"{newest}. Lower learning_rate or look at the data, then resume")
