"""What a run records beyond metrics.jsonl: the same values in Weights & Biases (offline) and in
TensorBoard event files, per-part health values, and plot.py's picture of the losses."""

import json
import struct
import sys

import numpy as np
import pytest
from conftest import run_program, tiny_run_args

from gptjax import loop, plot, reporting
from gptjax.config import from_command_line
from gptjax.errors import UsageError


def leveldb_records(path) -> list[bytes]:
    """The records of a LevelDB-log file (what wandb writes its offline run in, after a 7-byte header)."""
    data, position, records, pieces = path.read_bytes(), 7, [], b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pieces += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            records.append(pieces)
            pieces = b""
    return records


def wandb_history(out_dir) -> dict[int, dict]:
    from wandb.proto import wandb_internal_pb2

    [run_file] = out_dir.glob("wandb/offline-run-*/run-*.wandb")
    history = {}
    for raw in leveldb_records(run_file):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            row = {item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history[row["_step"]] = row
    return history


def tensorboard_scalars(log_dir) -> dict[tuple[str, int], float]:
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in log_dir.glob("events.out.tfevents.*"):
        data, position = path.read_bytes(), 0
        while position < len(data):  # TFRecord: length, its crc, the event, its crc
            (length,) = struct.unpack("<Q", data[position:position + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[position + 12:position + 12 + length])
            position += 12 + length + 4
            for value in event.summary.value:
                scalars[value.tag, event.step] = value.simple_value
    return scalars


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("records")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = tiny_run_args(tmp_path, wandb_log=True, tensorboard_dir=tmp_path / "tb", log_health=True, grad_clip=0.05)
    loop.train(from_command_line(["train.py", *args]))
    monkeypatch.undo()
    rows = [json.loads(line) for line in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    return tmp_path, rows


def test_wandb_and_tensorboard_hold_the_same_values_as_metrics_jsonl(recorded_run):
    tmp_path, rows = recorded_run
    history, scalars = wandb_history(tmp_path / "out"), tensorboard_scalars(tmp_path / "tb")
    for row in rows:
        for key, value in row.items():
            if key == "iter" or isinstance(value, bool):
                continue
            assert history[row["iter"]][key] == pytest.approx(value)
            assert scalars[key, row["iter"]] == pytest.approx(value, rel=1e-6)  # stored as float32
    assert (tmp_path / "out/wandb_id").read_text().strip()  # what a resumed run continues


def test_wandb_never_gets_an_iteration_twice():
    logged = []

    class Run:  # a wandb run resumed at step 5
        step = 5

        def log(self, values, step):
            logged.append(step)

    sink = reporting.WandbSink.__new__(reporting.WandbSink)
    sink._run = Run()
    for it in (3, 4, 5, 6):
        sink({"iter": it, "loss": 1.0})
    assert logged == [5, 6]


def test_log_health_records_each_part_of_the_model(recorded_run):
    _, rows = recorded_run
    steps = [row for row in rows if "loss" in row]
    parts = ["h.0", "wte", "wpe", "ln_f"]
    for row in steps:
        for part in parts:
            assert row[f"{part}/param_norm"] > 0 and row[f"{part}/grad_norm"] > 0
            assert 0 < row[f"{part}/update_ratio"] < 1
        assert row["clipped"] == (row["grad_norm"] > 0.05)
    assert any(row["clipped"] for row in steps)


def test_a_missing_package_is_one_line_that_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(UsageError, match=r"config.wandb_log needs the wandb package: pip install wandb"):
        reporting.WandbSink(tmp_path, "p", "r", {})
    with pytest.raises(UsageError, match=r"config.tensorboard_dir needs the tensorboardX package"):
        reporting.TensorBoardSink(tmp_path)


def test_plot_draws_the_runs_losses_into_a_png(recorded_run, tmp_path):
    import matplotlib.image

    run_dir, _ = recorded_run
    result = run_program(["plot.py", str(run_dir / "out"), str(run_dir / "out"), "--output", str(tmp_path / "l.png")])
    assert result.returncode == 0, result.stderr
    image = matplotlib.image.imread(tmp_path / "l.png")
    assert image.shape[:2] == (plot.SIZE_INCHES[1] * plot.DPI, plot.SIZE_INCHES[0] * plot.DPI)
    drawn = np.any(image[..., :3] < 0.9, axis=-1)  # not white
    assert 0.02 < drawn.mean() < 0.5  # axes, lines and a legend: neither blank nor filled
    with pytest.raises(UsageError, match="has no metrics.jsonl: pass the out_dir of a training run"):
        plot.plot([tmp_path / "nothing"], tmp_path / "x.png")
    out = run_dir / "out"
    assert plot.plot([out], tmp_path / "new" / "loss") == tmp_path / "new" / "loss.png"  # the folder is made
    assert (tmp_path / "new" / "loss.png").read_bytes().startswith(b"\x89PNG")
    (tmp_path / "a_file").touch()
    for output, message in ((tmp_path, "is a folder: give the path of the image to write"),
                            (tmp_path / "a_file" / "x.png", r"could not write .*a_file/x.png \(.*a_file"),
                            (tmp_path / "x.txt", r"could not write .*x.txt \(Format 'txt' is not supported")):
        with pytest.raises(UsageError, match=message):
            plot.plot([out], output)


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the lines drawn here are stand-ins
def test_plot_draws_bits_per_byte_of_runs_with_different_tokenizers_on_one_axis(tmp_path, monkeypatch):
    runs = {"chars": [(0, 4.2, 6.0), (10, 2.0, 2.9)], "bpe": [(0, 8.3, 3.1), (10, 4.1, 1.6)]}
    for name, evaluations in runs.items():
        (tmp_path / name).mkdir()
        rows = [{"iter": it, "train_loss": loss, "val_loss": loss, "train_bpb": bpb, "val_bpb": bpb}
                for it, loss, bpb in evaluations]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    drawn = {}
    monkeypatch.setattr("matplotlib.axes.Axes.plot", lambda ax, xs, ys, *args, **kwargs: drawn.setdefault(
        (ax.get_subplotspec().rowspan.start, kwargs.get("label")), (list(xs), list(ys))))
    plot.main(["plot.py", str(tmp_path / "chars"), str(tmp_path / "bpe"), "--bpb"])
    assert (tmp_path / "chars" / "bpb.png").read_bytes().startswith(b"\x89PNG")
    assert drawn[(0, f"{tmp_path / 'chars'} val")] == ([0, 10], [6.0, 2.9])
    assert drawn[(0, f"{tmp_path / 'bpe'} val")] == ([0, 10], [3.1, 1.6])
    assert not [label for _, label in drawn if label and label.endswith("(step)")]  # a step's loss is per token
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.jsonl").write_text('{"iter": 0, "train_loss": 4.0, "val_loss": 4.1}\n')
    with pytest.raises(UsageError, match="has no evaluation with bits per byte"):
        plot.plot([tmp_path / "old"], tmp_path / "x.png", bpb=True)


def test_a_row_cut_short_by_a_kill_is_plotted_around_and_set_aside_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    whole = '{"iter": 0, "loss": 4.0}\n{"iter": 1, "loss": 3.9}\n'
    path.write_text(whole + '{"iter": 2, "lo')  # the kill came during the write
    assert plot.read_records(tmp_path) == [{"iter": 0, "loss": 4.0}, {"iter": 1, "loss": 3.9}]
    aside = loop._set_records_aside(path, 2)  # resuming from the checkpoint of iteration 2
    assert path.read_text() == whole and aside.read_text() == '{"iter": 2, "lo\n'
    path.write_text('{"iter": 0, "lo\n' + whole)  # not the last row: not a kill, refused
    with pytest.raises(UsageError, match=r"metrics.jsonl: row 1 is not JSON"):
        plot.read_records(tmp_path)
