"""Draw runs' train and validation loss, and learning rate, against iteration from their
metrics.jsonl into one PNG, a line per run and split, with a legend.

    python -m gptjax.plot OUT_DIR [OUT_DIR ...] [--output FILE] [--bpb]
    python plot.py OUT_DIR ...                        # the same, from a clone

FILE defaults to the first OUT_DIR's loss.png (bpb.png with --bpb). --bpb draws the evaluations'
bits per byte instead of loss: runs with different tokenizers then share one axis. Needs
matplotlib (the plot extra).
"""

import json
import sys
from pathlib import Path

from gptjax.errors import OptionParser, UsageError, program_name
from gptjax.render import choose_fonts, pyplot

SIZE_INCHES, DPI = (10, 7), 100  # a 1000 x 700 pixel image


def read_records(out_dir: Path) -> list[dict]:
    """The rows of out_dir/metrics.jsonl."""
    path = Path(out_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UsageError(f"{Path(out_dir).absolute()} has no metrics.jsonl: pass the out_dir of a training run")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):  # else the last row, cut short by a kill: plot the rest
                raise UsageError(f"{path}: row {number} is not JSON (a training run writes one object a row)") from None
    return rows


def plot(out_dirs: list[Path], output: Path, bpb: bool = False) -> Path:
    """Loss (log scale: early and late losses differ by an order of magnitude) above learning rate,
    into output (a PNG where its name has no suffix: matplotlib's default); returns its path. bpb:
    the evaluations' bits per byte in place of loss."""
    if output.is_dir():
        raise UsageError(f"{output} is a folder: give the path of the image to write")
    output = output if output.suffix else output.with_suffix(".png")
    plt = pyplot()
    import matplotlib.ticker

    figure, (loss_axes, lr_axes) = plt.subplots(2, 1, sharex=True, figsize=SIZE_INCHES, dpi=DPI,
                                                gridspec_kw={"height_ratios": [3, 1]})
    unit = "_bpb" if bpb else "_loss"
    for index, out_dir in enumerate(out_dirs):
        rows, name = read_records(out_dir), str(out_dir)  # as the command line named it
        steps = [r for r in rows if r.get("loss") is not None]
        evaluations = [r for r in rows if f"val{unit}" in r]
        if bpb and not evaluations:
            raise UsageError(f"{Path(out_dir).absolute()} has no evaluation with bits per byte (val_bpb) to plot")
        color = f"C{index}"  # one colour a run, from matplotlib's cycle
        if not bpb:  # a step's loss is per token: no line of it in bits per byte
            loss_axes.plot([r["iter"] for r in steps], [r["loss"] for r in steps], alpha=0.4, linewidth=0.8,
                           color=color, label=f"{name} train (step)")
        loss_axes.plot([r["iter"] for r in evaluations], [r[f"val{unit}"] for r in evaluations], "o-", color=color,
                       label=f"{name} val")
        loss_axes.plot([r["iter"] for r in evaluations], [r[f"train{unit}"] for r in evaluations], "s--",
                       color=color, markersize=4, label=f"{name} train (evaluation)")
        lr_axes.plot([r["iter"] for r in steps if "lr" in r], [r["lr"] for r in steps if "lr" in r], color=color)
    loss_axes.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")  # 2.5, not 2.5x10^0
    loss_axes.yaxis.set_major_formatter(plain)
    loss_axes.yaxis.set_minor_formatter(plain)
    loss_axes.set_ylabel("bits per byte (log scale)" if bpb else "loss (log scale)")
    loss_axes.grid(True, which="both", alpha=0.3)
    # the runs' names may be in any script: fonts that have their characters, one installed since too
    fonts, _ = choose_fonts(" ".join(str(out_dir) for out_dir in out_dirs))
    loss_axes.legend(prop={"size": "small", "family": [f.name for f in fonts] or None})
    lr_axes.set_ylabel("learning rate")
    lr_axes.set_xlabel("iteration")
    lr_axes.grid(True, alpha=0.3)
    figure.tight_layout()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(output)
    except (OSError, ValueError) as e:  # a folder that cannot be made or written; a format matplotlib lacks
        raise UsageError(f"could not write {output} ({e})") from None
    finally:
        plt.close(figure)
    return output


def main(argv: list[str]) -> None:
    parser = OptionParser(prog=program_name(argv[0]), description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dirs", nargs="+", type=Path, help="training runs' out_dir")
    parser.add_argument("--output", type=Path, help="the PNG to write (default: the first OUT_DIR/loss.png)")
    parser.add_argument("--bpb", action="store_true", help="bits per byte instead of loss (tokenizers compare)")
    try:
        args = parser.parse_args(argv[1:])
        default = args.out_dirs[0] / ("bpb.png" if args.bpb else "loss.png")
        written = plot(args.out_dirs, args.output or default, bpb=args.bpb)
    except UsageError as e:
        sys.exit(f"{program_name(argv[0])}: error: {e}")
    print(f"wrote {written.absolute()}")


if __name__ == "__main__":
    main(sys.argv)
