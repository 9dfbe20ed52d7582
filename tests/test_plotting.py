"""Pictures of a run (mnistc.plotting, mnistc.plot, `python -m mnistc.plot`): each panel
holds the run's own numbers, the files are written whole, pyplot is never imported, and
the errors are one line. A small run on a synthetic MNIST-shaped folder makes the fast
tests; the realdata one draws the tutorial run."""

import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import mnistc
from mnistc import data
from mnistc.evaluation import evaluate
from mnistc.restore import load
from mnistc.runlog import read_records

from conftest import PACKAGE_ROOT, assert_one_line_error, import_or_skip
from idx_helpers import fake_mnist, write_mnist_dir
from test_eval_predict import run_module

matplotlib = import_or_skip("matplotlib", "test")


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """Random 28x28 images, a run evaluated at steps 19, 39 and 59: (data dir, train dir)."""
    root = tmp_path_factory.mktemp("plot_synthetic")
    data_dir = write_mnist_dir(root / "mnist", fake_mnist(n_train=300, n_test=130, seed=4))
    train_dir = root / "run"
    mnistc.train(
        hidden=(12,),
        batch_size=16,
        max_steps=60,
        checkpoint_every=20,
        validation_size=70,
        learning_rate=0.05,
        data_dir=str(data_dir),
        train_dir=str(train_dir),
        tensorboard=False,
    )
    return data_dir, train_dir


def axes_titled(figure, title):
    found = [a for a in figure.get_axes() if a.get_title() == title]
    assert len(found) == 1, [a.get_title() for a in figure.get_axes()]
    return found[0]


def series(records, tag):
    return [(r["step"], r["value"]) for r in records if r["tag"] == tag]


def check_run_figure(figure, data_dir, train_dir, model):
    """Every panel against the numbers it must show."""
    records = read_records(train_dir / "summaries.jsonl")
    loss = axes_titled(figure, "Training loss (one batch)")
    assert (loss.get_xlabel(), loss.get_ylabel()) == ("step", "cross-entropy loss")
    (line,) = loss.get_lines()
    assert list(zip(*line.get_data())) == series(records, "loss")

    precision = axes_titled(figure, "Precision @ 1 (whole splits)")
    assert (precision.get_xlabel(), precision.get_ylabel()) == ("step", "precision")
    lines = precision.get_lines()
    assert [ln.get_label().split(",")[0] for ln in lines] == ["train", "validation", "test"]
    for ln, split in zip(lines, ("train", "validation", "test")):
        points = series(records, f"precision/{split}")
        assert list(zip(*ln.get_data())) == points
        assert ln.get_label() == f"{split}, final {points[-1][1]:.4f}"

    test = data.read_data_sets(
        str(data_dir), validation_size=model.meta.validation_size, download=False
    ).test
    result = evaluate(model, test)
    matrix = axes_titled(figure, "Test confusion matrix")
    assert (matrix.get_xlabel(), matrix.get_ylabel()) == ("predicted class", "true class")
    (image,) = matrix.get_images()
    np.testing.assert_array_equal(image.get_array().filled(0), result["confusion"])
    names = list(model.class_names)
    assert [t.get_text() for t in matrix.get_xticklabels()] == names
    assert [t.get_text() for t in matrix.get_yticklabels()] == names
    assert sum(int(t.get_text()) for t in matrix.texts) == test.num_examples

    predicted, probabilities = model.predict(test.images)
    wrong = np.flatnonzero(predicted != test.labels)
    confidence = probabilities[wrong, predicted[wrong]]
    expected = wrong[np.argsort(-confidence, kind="stable")][:16]
    shown = [a for a in figure.get_axes() if a.get_images() and a is not matrix]
    assert len(shown) == len(expected) == min(16, wrong.size)
    for axes, i in zip(shown, expected):
        (picture,) = axes.get_images()
        np.testing.assert_array_equal(picture.get_array(), test.images[i].reshape(28, 28))
        assert axes.get_title() == (
            f"true {names[test.labels[i]]}\npred {names[predicted[i]]} "
            f"({probabilities[i, predicted[i]]:.2f})"
        )
    title = figure.get_suptitle()
    assert f"step {model.global_step}" in title
    assert f"test Precision @ 1 = {result['precision']:.4f}" in title
    return result


def test_figure_shows_the_runs_numbers(synthetic_run):
    data_dir, train_dir = synthetic_run
    figure = mnistc.plot(train_dir, data_dir=data_dir, download=False)
    assert isinstance(figure, matplotlib.figure.Figure)
    check_run_figure(figure, data_dir, train_dir, load(train_dir))
    older = mnistc.plot(train_dir, step=40, data_dir=data_dir, download=False)
    check_run_figure(older, data_dir, train_dir, load(train_dir, step=40))


def test_without_summaries_the_curves_say_so(synthetic_run, tmp_path):
    data_dir, train_dir = synthetic_run
    copy = tmp_path / "run"
    shutil.copytree(train_dir, copy)
    (copy / "summaries.jsonl").unlink()
    figure = mnistc.plot(copy, data_dir=data_dir, download=False)
    for title in ("Training loss (one batch)", "Precision @ 1 (whole splits)"):
        texts = [t.get_text() for t in axes_titled(figure, title).texts]
        assert texts == [f"no records in {copy / 'summaries.jsonl'}"]


def png_size(raw):
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


def test_cli_writes_png_svg_and_pdf(synthetic_run, tmp_path):
    data_dir, train_dir = synthetic_run
    common = ["--train-dir", str(train_dir), "--data-dir", str(data_dir), "--no-download"]
    result = run_module("plot", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Wrote run.png (step 60, mnist)\n"
    assert png_size((tmp_path / "run.png").read_bytes()) == (1300, 950)
    result = run_module(
        "plot", *common, "--dpi", "50", "--checkpoint", "20", "-o", "small.png", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Wrote small.png (step 20, mnist)\n"
    assert png_size((tmp_path / "small.png").read_bytes()) == (650, 475)
    for name, magic in (("run.svg", b"<?xml"), ("run.pdf", b"%PDF")):
        result = run_module("plot", *common, "--output", name, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / name).read_bytes().startswith(magic)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run.pdf",
        "run.png",
        "run.svg",
        "small.png",
    ]


def test_pyplot_is_never_imported(synthetic_run, tmp_path):
    data_dir, train_dir = synthetic_run
    script = (
        "import sys, mnistc\n"
        f"figure = mnistc.plot({str(train_dir)!r}, data_dir={str(data_dir)!r}, download=False,"
        " output='run.png')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT), MPLBACKEND="module://no_such_backend")
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert png_size((tmp_path / "run.png").read_bytes()) == (1300, 950)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["-o", "run.gif2"], ["run.gif2: unknown image format '.gif2'", ".png"]),
        (["-o", "missing/run.png"], ["missing/run.png: cannot write"]),
        (["--checkpoint", "999"], ["no checkpoint for step 999"]),
        (["--dpi", "0"], ["--dpi", "must be >= 1"]),
    ],
)
def test_cli_errors_are_one_line_and_leave_the_old_file(synthetic_run, tmp_path, args, fragments):
    data_dir, train_dir = synthetic_run
    (tmp_path / "run.png").write_bytes(b"the previous picture")
    result = run_module(
        "plot", "--train-dir", str(train_dir), "--data-dir", str(data_dir), *args, cwd=tmp_path
    )
    assert_one_line_error(result, "plot", *fragments)
    assert (tmp_path / "run.png").read_bytes() == b"the previous picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.png"]


def test_cli_without_matplotlib_names_the_extra(synthetic_run, tmp_path):
    data_dir, train_dir = synthetic_run
    result = run_module(
        "plot",
        "--train-dir",
        str(train_dir),
        "--data-dir",
        str(data_dir),
        cwd=tmp_path,
        pre="import sys; sys.modules['matplotlib'] = None",
    )
    assert_one_line_error(result, "plot", 'pip install "mnistc[plot]"')
    assert not (tmp_path / "run.png").exists()


@pytest.mark.realdata
def test_tutorial_run_figure(mnist_run, tmp_path):
    data_dir, train_dir = mnist_run
    figure = mnistc.plot(train_dir, data_dir=data_dir, download=False, output=tmp_path / "run.png")
    result = check_run_figure(figure, data_dir, train_dir, load(train_dir))
    summary_precision = read_records(train_dir / "summaries.jsonl")[-1]
    assert summary_precision["tag"] == "precision/test"
    assert result["precision"] == summary_precision["value"]
    assert "784-128-32-10 MLP on MNIST, step 2000" in figure.get_suptitle()
    assert png_size((tmp_path / "run.png").read_bytes()) == (1300, 950)
