"""Time data preparation with GPT-2's BPE on a generated corpus, and its peak memory.

    python benchmarks/prepare.py SHAKESPEARE_INPUT_TXT [--mb 200] [--procs 1 2 ...]
                                 [--layout jsonl|jsonl.gz|jsonl.zst|txt] [--document-chars 4000]

Writes a corpus of --mb MB (the Shakespeare text repeated, as .jsonl documents of --document-chars
characters, the same compressed by gzip or zstd, or one .txt), prepares it with num_proc = each of
--procs, and prints MB/s and the peak resident memory summed over the main process and its workers
(sampled every 50 ms from /proc), then tiktoken's own encode_ordinary_batch on the same documents for
comparison.
"""

import argparse
import functools
import gzip
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from gptjax import prepare, sources


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        children += [int(c) for c in task.read_text().split()]
    return children + [d for c in children for d in _descendants(c)]


class PeakMemory:
    """The largest sum of resident memory over this process and its descendants, while active."""

    def __init__(self):
        self.peak, self._done = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._done.wait(0.05):
            pids = [os.getpid(), *_descendants(os.getpid())]
            self.peak = max(self.peak, sum(_rss_mib(pid) for pid in pids))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shakespeare", type=Path)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--layout", choices=("jsonl", "jsonl.gz", "jsonl.zst", "txt"), default="jsonl")
    parser.add_argument("--document-chars", type=int, default=4000)
    args = parser.parse_args()

    text = args.shakespeare.read_text(encoding="utf-8")
    documents = [text[i:i + args.document_chars] for i in range(0, len(text), args.document_chars)]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / f"corpus.{args.layout}"
        # the command-line tools' default levels (gzip 6, not Python's 9; zstd 3): as corpora are most often compressed
        opener = {"jsonl.gz": functools.partial(gzip.open, compresslevel=6),
                  "jsonl.zst": getattr(sources.zstd, "open", None)}.get(args.layout, open)
        with opener(corpus, "wt", encoding="utf-8") as f:
            for copy in range(args.mb * 10**6 // len(text.encode("utf-8")) + 1):
                if args.layout.startswith("jsonl"):
                    f.writelines(json.dumps({"text": f"{copy} {d}"}) + "\n" for d in documents)
                else:
                    f.write(text)
        size = sum(len(d.encode("utf-8")) for d in documents) * (copy + 1) / 1e6
        n_documents = len(documents) * (copy + 1) if args.layout.startswith("jsonl") else 1
        print(f"corpus: {corpus.stat().st_size / 1e6:,.0f} MB on disk ({args.layout}), {size:,.0f} MB of text, "
              f"{n_documents:,} documents; {prepare.usable_cpus()} CPUs")
        for run, procs in enumerate(args.procs):  # a folder each: a prepared one would be found up to date
            with PeakMemory() as memory:
                start = time.perf_counter()
                prepare.prepare(Path(tmp) / f"out{run}", corpus, "gpt2", num_proc=procs)
                seconds = time.perf_counter() - start
            print(f"prepare, num_proc={procs}: {seconds:6.1f} s, {size / seconds:6.1f} MB/s, "
                  f"peak memory {memory.peak:,.0f} MiB (main + workers)")
        import tiktoken

        encoding = tiktoken.get_encoding("gpt2")
        sample = documents * max(1, int(50e6 // len(text.encode("utf-8"))))  # ~50 MB is enough to time it
        sample_mb = sum(len(d.encode("utf-8")) for d in sample) / 1e6
        for threads in args.procs:
            start = time.perf_counter()
            encoding.encode_ordinary_batch(sample, num_threads=threads)
            print(f"tiktoken encode_ordinary_batch, {threads} threads, {sample_mb:,.0f} MB in memory: "
                  f"{sample_mb / (time.perf_counter() - start):6.1f} MB/s")


if __name__ == "__main__":
    main()
