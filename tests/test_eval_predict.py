"""After training: mnistc.load (restore), `python -m mnistc.eval` and `python -m
mnistc.predict`. Fast tests train tiny nets on fake or synthetic data in the test;
the realdata ones train a small real model and check that the evaluation agrees with
the trainer's printed counts to the example, and that digits the model knows are read
back from PGM, PNG and IDX files with their true labels."""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mnistc import data, idx
from mnistc.checkpoint import load_file, save_file
from mnistc.config import TrainConfig
from mnistc.errors import CheckpointError, DataError
from mnistc.evaluation import evaluate, format_report
from mnistc.images import PILLOW_HINT, load_images, parse_pgm, parse_png, predict_files
from mnistc.model import MLP
from mnistc.restore import load
from mnistc.training import run_training

import reference as ref
from conftest import assert_one_line_error, run_tool, tool_env
from idx_helpers import learnable_mnist, write_mnist_dir

try:
    from PIL import Image
except ImportError:  # PNG tests skip outside CI; CI installs Pillow with the test extra
    Image = None

EVAL_LINE = re.compile(r"^  Num examples: (\d+)  Num correct: (\d+)  Precision @ 1: (\d\.\d{4})$")
CLASS_LINE = re.compile(r"^  (\d): (\d\.\d{4}|   n/a)  \((\d+)/(\d+)\)$")
PREDICT_LINE = re.compile(r"^(.+): digit (\d) \(probability (\d\.\d{4})\)(; next: .*)?$")


def needs_pillow():
    if Image is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Pillow is missing in CI (it belongs to the test extra)")
        pytest.skip('Pillow not installed (pip install "mnistc[images]")')


def run_module(module, *args, cwd, pre=None):
    """`python -m mnistc.<module> args` on the same mnistc this process imported;
    `pre` is Python run first (e.g. to hide Pillow)."""
    if pre is None:
        return run_tool(module, *args, cwd=cwd)
    command = [
        sys.executable,
        "-c",
        f"{pre}\nimport sys\nfrom mnistc.cli.{module} import main\n"
        f"sys.argv[0] = 'mnistc.{module}'\nsys.exit(main(sys.argv[1:]))",
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, env=tool_env(), timeout=600
    )


def train(train_dir, **options):
    """run_training with its printed lines captured: returns (summary, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = run_training(TrainConfig(train_dir=str(train_dir), **options))
    return summary, out.getvalue()


def printed_evals(stdout):
    """[(n, correct)] of the trainer's eval lines, in order (train, validation, test)."""
    return [
        (int(m.group(1)), int(m.group(2))) for m in map(EVAL_LINE.match, stdout.splitlines()) if m
    ]


def parse_eval_output(stdout):
    """(n, correct, per_class [(n, correct)], confusion) from the eval CLI's text."""
    lines = stdout.splitlines()
    head = [EVAL_LINE.match(line) for line in lines if EVAL_LINE.match(line)]
    assert len(head) == 1, stdout
    classes = [CLASS_LINE.match(line) for line in lines if CLASS_LINE.match(line)]
    assert [int(m.group(1)) for m in classes] == list(range(10)), stdout
    start = lines.index("Confusion matrix (rows: true class, columns: predicted):")
    assert lines[start + 1].split() == [str(c) for c in range(10)]
    rows = [line.split() for line in lines[start + 2 : start + 12]]
    assert [int(r[0]) for r in rows] == list(range(10)), stdout
    confusion = np.array([[int(v) for v in r[1:]] for r in rows])
    per_class = [(int(m.group(4)), int(m.group(3))) for m in classes]
    return int(head[0].group(1)), int(head[0].group(2)), per_class, confusion, classes


# ----------------------------------------------------------------------------------
# Fake and synthetic runs, trained once per module


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """Fake data, checkpoints at steps 250 and 300 (a resume adds the second)."""
    train_dir = tmp_path_factory.mktemp("fake_run")
    options = dict(hidden=(16, 8), batch_size=20, fake_data=True, quiet=True)
    run_training(TrainConfig(train_dir=str(train_dir), max_steps=250, **options))
    run_training(TrainConfig(train_dir=str(train_dir), max_steps=300, resume=True, **options))
    return train_dir


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A small MNIST-shaped folder whose ten classes are each a distinct pattern under
    noise (idx_helpers.learnable_mnist), a run on it with a non-default validation size
    that has learnt them, and the trainer's printed counts."""
    root = tmp_path_factory.mktemp("synthetic")
    data_dir = write_mnist_dir(root / "mnist", learnable_mnist(n_train=300, n_test=130, seed=4))
    train_dir = root / "run"
    _, stdout = train(
        train_dir,
        hidden=(12,),
        batch_size=16,
        max_steps=60,
        validation_size=70,
        data_dir=str(data_dir),
        learning_rate=0.05,
    )
    counts = printed_evals(stdout)
    assert [n for n, _ in counts] == [230, 70, 130], stdout
    assert all(correct >= 0.9 * n for n, correct in counts), stdout  # it did learn
    return data_dir, train_dir, dict(zip(("train", "validation", "test"), counts))


# ----------------------------------------------------------------------------------
# mnistc.restore.load


def test_load_rebuilds_the_model_from_a_dir_a_step_or_a_file(fake_run):
    model = load(fake_run)
    assert model.sizes == (784, 16, 8, 10)
    assert model.global_step == 300
    assert model.checkpoint_path == fake_run / "checkpoint-300.safetensors"
    assert model.meta.batch_size == 20 and model.meta.dataset == "mnist"
    assert model.class_names == tuple(str(d) for d in range(10))
    assert model.batch_size == 20  # evaluation chunks as in training

    older = load(fake_run, step=250)
    assert older.global_step == 250 and older.checkpoint_path.name == "checkpoint-250.safetensors"

    tensors, _ = load_file(fake_run / "checkpoint-250.safetensors")
    from_file = load(fake_run / "checkpoint-250.safetensors")
    assert from_file.global_step == 250
    for name, value in from_file.state_dict().items():
        np.testing.assert_array_equal(value, tensors[name])
    assert not np.array_equal(model.params["hidden1/weights"], older.params["hidden1/weights"])


def test_load_falls_back_past_a_corrupt_newest_checkpoint(fake_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(fake_run, copy)
    newest = copy / "checkpoint-300.safetensors"
    raw = bytearray(newest.read_bytes())
    raw[-5] ^= 0xFF
    newest.write_bytes(bytes(raw))
    model = load(copy)
    assert model.global_step == 250
    err = capsys.readouterr().err
    assert "warning: skipping" in err and "checkpoint-300.safetensors" in err
    with pytest.raises(CheckpointError, match="checksum"):
        load(copy, step=300)


def test_load_without_a_checkpoint_names_the_place(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint") as info:
        load(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(CheckpointError, match="no such"):
        load(tmp_path / "missing")


def test_load_of_a_missing_step_lists_the_steps_there(fake_run):
    with pytest.raises(CheckpointError, match="250, 300") as info:
        load(fake_run, step=7)
    assert "checkpoint-7.safetensors" in str(info.value)
    with pytest.raises(ValueError, match="train directory"):
        load(fake_run / "checkpoint-300.safetensors", step=300)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda t, m: m.pop("sizes"), 'lacks "sizes"'),
        (lambda t, m: m.update(sizes="[784, 16"), "not JSON"),
        (lambda t, m: m.update(sizes="[784, 0, 10]"), '"sizes" entry must be a whole number'),
        (lambda t, m: m.update(sizes='"784"'), '"sizes" must list'),
        (lambda t, m: m.update(sizes="[784, 32, 8, 10]"), "hidden1/weights"),
        (lambda t, m: m.update(sizes="[784, 16, 10]"), "softmax_linear/weights"),
        (lambda t, m: m.update(global_step="x"), "global_step"),
        (lambda t, m: m.update(run="{"), '"run"'),
        (lambda t, m: t.pop("softmax_linear/biases"), "softmax_linear/biases"),
        (
            lambda t, m: t.update({"hidden1/biases": t["hidden1/biases"].astype(np.float64)}),
            "float32",
        ),
    ],
)
def test_load_rejects_inconsistent_checkpoints_naming_the_file(
    fake_run, tmp_path, change, fragment
):
    tensors, meta = load_file(fake_run / "checkpoint-300.safetensors")
    change(tensors, meta)
    path = tmp_path / "edited.safetensors"
    save_file(path, tensors, meta)
    with pytest.raises(CheckpointError) as info:
        load(path)
    assert str(path) in str(info.value) and fragment in str(info.value), str(info.value)


# ----------------------------------------------------------------------------------
# evaluate() and the eval CLI


def test_evaluate_agrees_with_a_float64_reference_on_learnt_classes(synthetic_run):
    """evaluate() on a model that learnt the synthetic classes: its counts, confusion
    matrix and per-class accuracy are the argmax of an independent NumPy forward pass
    (float64); a class absent from the split has no accuracy."""
    data_dir, train_dir, _ = synthetic_run
    model = load(train_dir)
    test = data.read_data_sets(str(data_dir), validation_size=70, download=False).test
    params = [(model.params[f"{n}/weights"], model.params[f"{n}/biases"]) for n in model.names]
    logits = ref.mlp_forward(params, test.images * np.float64(np.float32(1 / 255)))
    want = np.zeros((10, 10), np.int64)
    np.add.at(want, (test.labels, logits.argmax(axis=1)), 1)
    result = evaluate(model, test)
    assert result["n"] == 130 and np.array_equal(result["confusion"], want)
    assert result["argmax_correct"] == np.trace(want) >= 0.9 * 130
    assert result["correct"] == result["argmax_correct"] + result["tied_hits"]
    for c, entry in enumerate(result["per_class"]):
        assert (entry["n"], entry["correct"]) == (want[c].sum(), want[c, c])

    low = test.labels < 5
    part = evaluate(model, data.DataSet(test.images[low], test.labels[low]))
    assert all(entry["accuracy"] is None for entry in part["per_class"][5:])
    assert part["confusion"][5:].sum() == 0


def test_evaluate_ties_count_as_hits_for_precision_but_argmax_takes_the_lowest():
    """All-zero parameters: every logit ties. in_top_k (TF) counts every example;
    the argmax says 0 for all of them."""
    model = MLP((4,), batch_size=7, input_size=784, num_classes=10)  # parameters start at zero
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 50).astype(np.uint8)
    dataset = data.DataSet(rng.integers(0, 256, (50, 784), dtype=np.uint8), labels)
    result = evaluate(model, dataset)
    zeros = int((labels == 0).sum())
    assert result["correct"] == 50 and result["precision"] == 1.0
    assert result["argmax_correct"] == zeros == result["confusion"][0, 0]
    assert result["tied_hits"] == 50 - zeros
    assert (result["confusion"][:, 0] == np.bincount(labels, minlength=10)).all()
    assert result["confusion"][:, 1:].sum() == 0
    note = [line for line in format_report(result) if line.startswith("Note:")]
    assert note == [
        f"Note: in {50 - zeros} examples the label ties a lower class for the "
        "largest logit: Precision @ 1 counts them as hits, the argmax (per "
        f"class, matrix) as the lower class: 50 = {zeros} + {50 - zeros}"
    ]
    empty = data.DataSet(np.empty((0, 784), np.uint8), np.empty(0, np.uint8))
    assert evaluate(model, empty)["n"] == 0 and evaluate(model, empty)["precision"] == 0.0


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_eval_cli_agrees_with_the_trainer_on_synthetic_mnist(synthetic_run, split, tmp_path):
    """The split is formed with the checkpoint's validation_size (70, not 5000), and
    Num correct is the trainer's own, to the example."""
    data_dir, train_dir, counts = synthetic_run
    result = run_module(
        "eval",
        "--train-dir",
        str(train_dir),
        "--data-dir",
        str(data_dir),
        "--split",
        split,
        "--no-download",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    n, correct, per_class, confusion, _ = parse_eval_output(result.stdout)
    assert (n, correct) == counts[split]
    assert confusion.sum() == n
    assert per_class == [(int(confusion[c].sum()), int(confusion[c, c])) for c in range(10)]


def test_eval_cli_json_and_text_agree(synthetic_run, tmp_path):
    data_dir, train_dir, counts = synthetic_run
    common = ["--train-dir", str(train_dir), "--data-dir", str(data_dir), "--checkpoint", "60"]
    text = run_module("eval", *common, cwd=tmp_path)
    as_json = run_module("eval", *common, "--json", cwd=tmp_path)
    assert text.returncode == 0 and as_json.returncode == 0, (text.stderr, as_json.stderr)
    n, correct, per_class, confusion, _ = parse_eval_output(text.stdout)
    result = json.loads(as_json.stdout)
    assert (result["n"], result["correct"]) == (n, correct) == counts["test"]
    assert np.array_equal(np.array(result["confusion"]), confusion)
    assert result["argmax_correct"] + result["tied_hits"] == result["correct"]
    assert result["global_step"] == 60 and result["split"] == "test"


def test_eval_cli_on_fake_data_prints_the_tutorials_line(fake_run, tmp_path):
    result = run_module(
        "eval",
        "--train-dir",
        str(fake_run),
        "--fake-data",
        "--checkpoint",
        str(fake_run / "checkpoint-250.safetensors"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Checkpoint {fake_run / 'checkpoint-250.safetensors'} (step 250, mnist)"
    assert lines[1] == "Test Data Eval:"
    # The format only: on fake data (one image, label 0) any net that can move a bias
    # is right everywhere; learning is checked on synthetic data above.
    assert EVAL_LINE.match(lines[2]) and lines[2].startswith("  Num examples: 10000  ")
    n, _, per_class, confusion, classes = parse_eval_output(result.stdout)
    assert confusion[0, 0] == 10000 and per_class[0] == (10000, 10000)
    assert [m.group(2) for m in classes[1:]] == ["   n/a"] * 9


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--split", "nonsense"], ["--split", "nonsense"]),
        (["--threads", "0"], ["--threads"]),
        (["--validation-size", "-1"], ["--validation-size"]),
        (["--checkpoint", "7"], ["checkpoint-7.safetensors", "250, 300"]),
        (["--checkpoint", "no-such-file.safetensors"], ["no-such-file.safetensors"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_eval_cli_bad_flags_are_one_line_errors(fake_run, tmp_path, args, fragments):
    result = run_module("eval", "--train-dir", str(fake_run), "--fake-data", *args, cwd=tmp_path)
    assert_one_line_error(result, "eval", *fragments)


def test_eval_cli_empty_train_dir_is_a_one_line_error(tmp_path):
    (tmp_path / "run").mkdir()
    result = run_module("eval", "--train-dir", str(tmp_path / "run"), "--fake-data", cwd=tmp_path)
    assert_one_line_error(result, "eval", "no checkpoint", str(tmp_path / "run"))


def test_eval_cli_unreadable_checkpoints_are_a_one_line_error(fake_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint-5.safetensors").write_bytes(b"garbage")
    result = run_module("eval", "--train-dir", str(run), "--fake-data", cwd=tmp_path)
    assert_one_line_error(result, "eval", "checkpoint-5.safetensors")


def test_eval_cli_missing_data_is_a_one_line_error(fake_run, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_module(
        "eval",
        "--train-dir",
        str(fake_run),
        "--data-dir",
        str(tmp_path / "empty"),
        "--no-download",
        cwd=tmp_path,
    )
    assert_one_line_error(result, "eval", "train-images-idx3-ubyte", "--data-dir")


# ----------------------------------------------------------------------------------
# Image readers


def digit_image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)


def pgm_p5(image, maxval=255, header=None):
    header = header or f"P5\n28 28\n{maxval}\n".encode()
    return header + image.astype(np.uint8).tobytes()


def pgm_p2(image, maxval=255, header=None):
    header = header or f"P2\n# a comment\n28 28\n{maxval}\n".encode()
    body = "\n".join(" ".join(str(int(v)) for v in row) for row in image)
    return header + body.encode() + b"\n"


def test_pgm_p5_and_p2_read_back_exactly():
    image = digit_image()
    np.testing.assert_array_equal(parse_pgm(pgm_p5(image)), image)
    np.testing.assert_array_equal(parse_pgm(pgm_p2(image)), image)
    commented = b"P5 # made by hand\n# width then height\n28\t28 255\r" + image.tobytes()
    np.testing.assert_array_equal(parse_pgm(commented), image)


def test_pgm_with_a_small_maxval_is_rescaled_to_255():
    image = np.arange(784).reshape(28, 28) % 16
    expected = np.round(image * 255 / 15).astype(np.uint8)
    np.testing.assert_array_equal(parse_pgm(pgm_p5(image, 15)), expected)
    np.testing.assert_array_equal(parse_pgm(pgm_p2(image, 15)), expected)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"P5\n27 28\n255\n" + bytes(27 * 28), "27x28"),
        (b"P5\n28 28\n255\n" + bytes(100), "truncated PGM: expected 784 pixel bytes, found 100"),
        (b"P5\n28 28\n255\n" + bytes(785), "1 bytes after"),
        (b"P2\n28 28\n255\n" + b"0 " * 783, "truncated PGM: expected 784 pixel values, found 783"),
        (b"P2\n28 28\n255\n" + b"0 " * 783 + b"x", "pixel 783"),
        (b"P2\n28 28\n15\n" + b"0 " * 783 + b"16", "more than the maxval 15"),
        (b"P5\n28 28\n65535\n" + bytes(2 * 784), "16-bit"),
        (b"P5\n28 28\n0\n" + bytes(784), "maxval 0"),
        (b"P5\n28x28\n255\n" + bytes(784), "bad PGM header"),
        (b"P5\n28 28", "bad PGM header"),
        (b"P528 28 255\n" + bytes(784), "bad PGM header"),
        (b"P6\n28 28\n255\n" + bytes(3 * 784), "not a PGM"),
    ],
)
def test_bad_pgm_files_are_clear_errors(raw, fragment):
    with pytest.raises(DataError) as info:
        parse_pgm(raw, "bad.pgm")
    assert str(info.value).startswith("bad.pgm: ") and fragment in str(info.value), str(info.value)


def png_bytes(image, mode=None, **save):
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image, mode)).save(
        buffer, format="PNG", **save
    )
    return buffer.getvalue()


def test_png_modes_become_mnist_grayscale():
    needs_pillow()
    image = digit_image()
    np.testing.assert_array_equal(parse_png(png_bytes(image)), image)
    rgb = np.stack([image] * 3, axis=-1)
    np.testing.assert_array_equal(parse_png(png_bytes(rgb)), image)  # gray RGB stays gray
    colour = np.zeros((28, 28, 3), np.uint8)
    colour[..., 0] = 200  # pure red: luma 200 * 299/1000
    assert (parse_png(png_bytes(colour)) == round(200 * 0.299)).all()
    # Alpha is composited over black: transparent white is background (0).
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:14, :, 3] = 255
    got = parse_png(png_bytes(rgba))
    assert (got[:14] == 255).all() and (got[14:] == 0).all()
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    np.testing.assert_array_equal(parse_png(png_bytes(la)), got)
    palette = Image.fromarray(image).convert("P")
    np.testing.assert_array_equal(parse_png(png_bytes(palette)), np.asarray(palette.convert("L")))
    binary = Image.fromarray(image).convert("1")
    np.testing.assert_array_equal(parse_png(png_bytes(binary)), np.asarray(binary.convert("L")))


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: Image.fromarray(np.zeros((28, 28), np.uint16) + 300), "16-bit PNG"),
        (lambda: Image.fromarray(np.zeros((32, 28), np.uint8)), "28x32"),
    ],
)
def test_bad_png_files_are_clear_errors(make, fragment):
    needs_pillow()
    with pytest.raises(DataError, match=fragment):
        parse_png(png_bytes(make()), "bad.png")


def test_truncated_png_is_a_clear_error():
    needs_pillow()
    raw = png_bytes(digit_image())
    with pytest.raises(DataError, match="bad.png: cannot decode PNG"):
        parse_png(raw[:60], "bad.png")


def test_png_without_pillow_says_how_to_install_it(monkeypatch):
    header = (
        b"\x89PNG\r\n\x1a\n"
        + (13).to_bytes(4, "big")
        + b"IHDR"
        + (28).to_bytes(4, "big") * 2
        + bytes([8, 0, 0, 0, 0])
        + bytes(4)
    )
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` fail
    with pytest.raises(DataError) as info:
        parse_png(header, "digit.png")
    assert str(info.value) == f"digit.png: {PILLOW_HINT}"
    assert 'pip install "mnistc[images]"' in PILLOW_HINT


def test_load_images_names_idx_entries_and_inverts(tmp_path):
    stack = np.stack([digit_image(s) for s in range(3)])
    idx.write(tmp_path / "three.idx.gz", stack)
    (tmp_path / "one.pgm").write_bytes(pgm_p5(stack[1]))
    names, images = load_images([tmp_path / "one.pgm", tmp_path / "three.idx.gz"])
    assert names == [str(tmp_path / "one.pgm")] + [
        f"{tmp_path / 'three.idx.gz'}[{i}]" for i in range(3)
    ]
    np.testing.assert_array_equal(images, np.concatenate([stack[1:2], stack]).reshape(4, 784))
    _, inverted = load_images([tmp_path / "one.pgm"], invert=True)
    np.testing.assert_array_equal(inverted[0], 255 - stack[1].reshape(784))
    idx.write(tmp_path / "labels.idx", np.arange(3, dtype=np.uint8))
    with pytest.raises(DataError, match="labels file"):
        load_images([tmp_path / "labels.idx"])


# ----------------------------------------------------------------------------------
# predict_files and the predict CLI


def test_predict_files_matches_model_predict(synthetic_run, tmp_path):
    _, train_dir, _ = synthetic_run
    model = load(train_dir)
    stack = np.stack([digit_image(s) for s in range(5)])
    idx.write(tmp_path / "five.idx", stack)
    for i, image in enumerate(stack):
        (tmp_path / f"{i}.pgm").write_bytes(pgm_p2(image))
    digits, probs = model.predict(stack.reshape(5, 784))
    expected = [(int(d), float(p[d])) for d, p in zip(digits, probs)]
    from_idx = predict_files(model, [tmp_path / "five.idx"])
    from_pgm = predict_files(model, [tmp_path / f"{i}.pgm" for i in range(5)])
    assert [(d, p) for _, d, p in from_idx] == expected
    assert [(d, p) for _, d, p in from_pgm] == expected
    assert [name for name, _, _ in from_pgm] == [str(tmp_path / f"{i}.pgm") for i in range(5)]


def test_predict_cli_prints_one_line_per_image(synthetic_run, tmp_path):
    _, train_dir, _ = synthetic_run
    stack = np.stack([digit_image(s) for s in range(2)])
    idx.write(tmp_path / "two.idx", stack)
    (tmp_path / "a.pgm").write_bytes(pgm_p5(stack[0]))
    result = run_module(
        "predict", "--train-dir", str(train_dir), "--top", "3", "a.pgm", "two.idx", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    matches = [PREDICT_LINE.match(line) for line in result.stdout.splitlines()]
    assert all(matches) and [m.group(1) for m in matches] == ["a.pgm", "two.idx[0]", "two.idx[1]"]
    assert matches[0].group(2) == matches[1].group(2)  # same pixels, same digit
    nexts = [re.findall(r"(\d) \((\d\.\d{4})\)", m.group(4)) for m in matches]
    assert all(len(n) == 2 for n in nexts)
    for m, rest in zip(matches, nexts):  # descending probabilities, distinct digits
        probs = [float(m.group(3))] + [float(p) for _, p in rest]
        assert probs == sorted(probs, reverse=True)
        assert len({m.group(2), *(d for d, _ in rest)}) == 3


@pytest.mark.parametrize(
    "files, extra, fragments",
    [
        ({"wide.pgm": b"P5\n29 28\n255\n" + bytes(29 * 28)}, [], ["wide.pgm", "29x28"]),
        ({"short.pgm": b"P5\n28 28\n255\n" + bytes(500)}, [], ["short.pgm", "truncated"]),
        ({"notes.txt": b"hello, world"}, [], ["notes.txt", "not a PGM (P5/P2), PNG or IDX"]),
        ({"empty.pgm": b""}, [], ["empty.pgm", "empty file"]),
        ({"ok.pgm": b"P5\n28 28\n255\n" + bytes(784)}, ["--top", "11"], ["--top"]),
        ({"ok.pgm": b"P5\n28 28\n255\n" + bytes(784)}, ["missing.pgm"], ["missing.pgm"]),
    ],
)
def test_predict_cli_bad_inputs_are_one_line_errors(fake_run, tmp_path, files, extra, fragments):
    for name, raw in files.items():
        (tmp_path / name).write_bytes(raw)
    result = run_module("predict", "--train-dir", str(fake_run), *files, *extra, cwd=tmp_path)
    assert_one_line_error(result, "predict", *fragments)
    assert result.stdout == ""


def test_predict_cli_empty_train_dir_is_a_one_line_error(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "ok.pgm").write_bytes(b"P5\n28 28\n255\n" + bytes(784))
    result = run_module("predict", "--train-dir", "run", "ok.pgm", cwd=tmp_path)
    assert_one_line_error(result, "predict", "no checkpoint")


def test_predict_cli_png_without_pillow_is_a_one_line_error(fake_run, tmp_path):
    header = (
        b"\x89PNG\r\n\x1a\n"
        + (13).to_bytes(4, "big")
        + b"IHDR"
        + (28).to_bytes(4, "big") * 2
        + bytes([8, 0, 0, 0, 0])
        + bytes(4)
    )
    (tmp_path / "digit.png").write_bytes(header)
    result = run_module(
        "predict",
        "--train-dir",
        str(fake_run),
        "digit.png",
        cwd=tmp_path,
        pre="import sys; sys.modules['PIL'] = None",
    )
    assert_one_line_error(result, "predict", "digit.png", 'pip install "mnistc[images]"')


# ----------------------------------------------------------------------------------
# Real MNIST


@pytest.fixture(scope="module")
def real_run(real_mnist_dir, tmp_path_factory):
    """A small real model (quick even on the plain GEMM) and the trainer's counts."""
    train_dir = tmp_path_factory.mktemp("real_run")
    _, stdout = train(
        train_dir, hidden=(32, 16), max_steps=600, data_dir=str(real_mnist_dir), download=False
    )
    counts = printed_evals(stdout)
    assert [n for n, _ in counts] == [55000, 5000, 10000], stdout
    return real_mnist_dir, train_dir, dict(zip(("train", "validation", "test"), counts))


@pytest.mark.realdata
@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_eval_cli_agrees_exactly_with_the_trainer_on_mnist(real_run, split, tmp_path):
    data_dir, train_dir, counts = real_run
    result = run_module(
        "eval",
        "--train-dir",
        str(train_dir),
        "--data-dir",
        str(data_dir),
        "--split",
        split,
        "--no-download",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    n, correct, per_class, confusion, classes = parse_eval_output(result.stdout)
    assert (n, correct) == counts[split]  # Num correct, to the example
    assert confusion.sum() == n
    assert np.array_equal(
        confusion.sum(axis=1), np.bincount(_split_labels(data_dir, split), minlength=10)
    )
    for c, m in enumerate(classes):
        assert (int(m.group(4)), int(m.group(3))) == (confusion[c].sum(), confusion[c, c])
        assert float(m.group(2)) == pytest.approx(confusion[c, c] / confusion[c].sum(), abs=5e-5)
    ties = [line for line in result.stdout.splitlines() if line.startswith("Note:")]
    tied = int(re.search(r"in (\d+) examples", ties[0]).group(1)) if ties else 0
    assert int(np.trace(confusion)) + tied == correct


def _split_labels(data_dir, split):
    sets = data.read_data_sets(str(data_dir), validation_size=5000, download=False)
    return getattr(sets, split).labels


@pytest.fixture(scope="module")
def known_digits(real_run):
    """20 test images (two of each digit) the real model classifies correctly."""
    data_dir, train_dir, _ = real_run
    model = load(train_dir)
    test = data.read_data_sets(str(data_dir), download=False).test
    predicted, _ = model.predict(test.images)
    chosen = []
    for digit in range(10):
        right = np.flatnonzero((test.labels == digit) & (predicted == digit))
        assert right.size >= 2, f"the model never gets {digit} right"
        chosen.extend(right[:2])
    chosen = np.array(chosen)
    return train_dir, test.images[chosen].reshape(-1, 28, 28), test.labels[chosen]


def _predicted_digits(result):
    assert result.returncode == 0, result.stderr
    matches = [PREDICT_LINE.match(line) for line in result.stdout.splitlines()]
    assert all(matches), result.stdout
    return [m.group(1) for m in matches], [int(m.group(2)) for m in matches]


@pytest.mark.realdata
@pytest.mark.parametrize("kind", ["p5", "p2"])
def test_predict_cli_reads_mnist_digits_from_pgm(known_digits, tmp_path, kind):
    train_dir, images, labels = known_digits
    names = []
    for i, image in enumerate(images):
        names.append(f"digit{i}.pgm")
        (tmp_path / names[-1]).write_bytes(pgm_p5(image) if kind == "p5" else pgm_p2(image))
    printed, digits = _predicted_digits(
        run_module("predict", "--train-dir", str(train_dir), *names, cwd=tmp_path)
    )
    assert printed == names and digits == labels.tolist()


@pytest.mark.realdata
def test_predict_cli_reads_mnist_digits_from_png(known_digits, tmp_path):
    needs_pillow()
    train_dir, images, labels = known_digits
    gray = [f"gray{i}.png" for i in range(len(images))]
    rgba = [f"rgba{i}.png" for i in range(len(images))]
    inverted = [f"inverted{i}.png" for i in range(len(images))]
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / gray[i])
        Image.fromarray(image).convert("RGBA").save(tmp_path / rgba[i])
        Image.fromarray(255 - image).save(tmp_path / inverted[i])  # black on white
    for names, extra in ((gray, []), (rgba, []), (inverted, ["--invert"])):
        printed, digits = _predicted_digits(
            run_module("predict", "--train-dir", str(train_dir), *extra, *names, cwd=tmp_path)
        )
        assert printed == names and digits == labels.tolist()


@pytest.mark.realdata
def test_predict_cli_reads_every_image_of_an_idx_file(known_digits, tmp_path):
    train_dir, images, labels = known_digits
    idx.write(tmp_path / "digits-idx3-ubyte.gz", images)
    printed, digits = _predicted_digits(
        run_module("predict", "--train-dir", str(train_dir), "digits-idx3-ubyte.gz", cwd=tmp_path)
    )
    assert printed == [f"digits-idx3-ubyte.gz[{i}]" for i in range(len(images))]
    assert digits == labels.tolist()
