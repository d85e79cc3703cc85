"""Tokenizers side by side on your texts: characters, GPT-2's BPE, and BPEs trained on the text.

    python benchmarks/tokenizers.py TEXT [TEXT ...] [--bpe 1024 4096 16384] [--seconds 90] [--workdir DIR]
        [--tokenizers char gpt2 bpe]

For each text and tokenizer: the data preparation in one process (wall time, and the process's
peak resident memory, Python and its libraries included), the UTF-8 bytes per token over the
whole text, then configs/char_cpu.py's model (4 layers, 4 heads, 128 wide, block 64, batch 12,
its learning-rate schedule) trained for --seconds of wall time from the program's start (stopped
by SIGTERM, as a scheduler stops a job; it saves and exits), and the val bits per byte of the
model it saved, evaluated on 100 batches. Bits per byte compare across tokenizers; a loss per
token does not. GPT-2's BPE needs tiktoken's files (TIKTOKEN_CACHE_DIR offline).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PREPARE = """
import json, resource, sys, time
from pathlib import Path
from gptjax import prepare
start = time.perf_counter()
tokenizer = prepare.prepare(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], num_proc=1,
                            bpe_vocab_size=int(sys.argv[4]))
print(json.dumps({"seconds": time.perf_counter() - start, "vocab": len(tokenizer),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
EVAL_ITERS = 100


def train_args(data_dir: Path, dataset: str, out_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/char_cpu.py"),
            f"--config.data_dir={data_dir}", f"--config.dataset={dataset}", f"--config.out_dir={out_dir}", *extra]


def evaluations(out_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "val_bpb" in row]


def measure(text: Path, kind: str, vocab_size: int, seconds: float, workdir: Path) -> dict:
    """One text and tokenizer: preparation, bytes per token, and val bits per byte after `seconds` of training."""
    name = f"{text.parent.name}-{kind}{vocab_size if kind == 'bpe' else ''}"
    data_dir, out_dir = workdir / "data", workdir / f"out-{name}"
    prepared = subprocess.run([sys.executable, "-c", PREPARE, str(data_dir / name), str(text), kind, str(vocab_size)],
                              capture_output=True, text=True, cwd=REPO)
    if prepared.returncode != 0:  # a vocabulary the text cannot fill, say: the row says why
        return {"error": prepared.stderr.strip().splitlines()[-1]}
    result = json.loads(prepared.stdout.splitlines()[-1])
    meta = json.loads((data_dir / name / "meta.json").read_text(encoding="utf-8"))
    result["bytes_per_token"] = text.stat().st_size / sum(meta["tokens"].values())
    # train for `seconds` of wall time from the start: evaluate at iteration 0 only (on one batch), then SIGTERM
    settings = [f"--config.input_file={text}", f"--config.tokenizer={kind}", f"--config.bpe_vocab_size={vocab_size}",
                "--config.eval_interval=1000000", "--config.eval_iters=1", "--config.log_interval=100"]
    process = subprocess.Popen(train_args(data_dir, name, out_dir, *settings), cwd=workdir,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
    _, errors = process.communicate()
    if process.returncode not in (0, 128 + signal.SIGTERM):
        raise RuntimeError(f"train.py for {name} failed:\n{errors[-2000:]}")
    if not (out_dir / "checkpoints").is_dir():  # stopped while it was starting: no step in the time
        return {**result, "iterations": 0, "val_bpb": float("nan"), "val_loss": float("nan")}
    evaluated = subprocess.run(train_args(data_dir, name, out_dir, "--config.init_from=resume",
                                          "--config.eval_only=True", f"--config.eval_iters={EVAL_ITERS}"),
                               capture_output=True, text=True, cwd=workdir)
    if evaluated.returncode != 0:
        raise RuntimeError(f"evaluating {name} failed:\n{evaluated.stderr[-2000:]}")
    last = evaluations(out_dir)[-1]
    return {**result, "iterations": last["iter"], "val_bpb": last["val_bpb"], "val_loss": last["val_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("texts", nargs="+", type=Path, help="UTF-8 text files")
    parser.add_argument("--bpe", nargs="*", type=int, default=[1024, 4096, 16384], help="BPE vocabulary sizes")
    parser.add_argument("--seconds", type=float, default=90, help="wall time of each training run")
    parser.add_argument("--workdir", type=Path, help="where datasets and runs go (default: a temporary folder)")
    parser.add_argument("--tokenizers", nargs="*", default=["char", "gpt2", "bpe"], help="which kinds to measure")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gptjax-tokenizers-"))
    tokenizers = [(kind, 0) for kind in ("char", "gpt2") if kind in args.tokenizers]
    tokenizers += [("bpe", n) for n in args.bpe if "bpe" in args.tokenizers]
    print(f"{args.seconds:g} s of training each (configs/char_cpu.py's model), {EVAL_ITERS} val batches; "
          f"{os.cpu_count()} CPUs; in {workdir}")
    print("| text | tokenizer | vocabulary | bytes per token | preparation s | peak MiB | iterations | val loss | "
          "val bpb |")
    print("|---|---|---|---|---|---|---|---|---|")
    for text in args.texts:
        for kind, vocab_size in tokenizers:
            r = measure(text.absolute(), kind, vocab_size, args.seconds, workdir)
            label = f"bpe {vocab_size}" if kind == "bpe" else kind
            if "error" in r:
                print(f"| {text.parent.name}/{text.name} | {label} | {r['error']} |", flush=True)
                continue
            print(f"| {text.parent.name}/{text.name} | {label} | {r['vocab']:,} | {r['bytes_per_token']:.2f} | "
                  f"{r['seconds']:.1f} | {r['peak_mib']:.0f} | {r['iterations']:,} | {r['val_loss']:.4f} | "
                  f"**{r['val_bpb']:.4f}** |", flush=True)


if __name__ == "__main__":
    main()
