"""Fashion-MNIST, the registry's second data set, end to end on the real files: the facts
its README states, `python -m mnistc.train --dataset fashion-mnist` with the tutorial's
recipe reaching a precision floor, eval and predict speaking in its class names, the
picture naming them too, and a checkpoint refusing to be resumed or evaluated as another
data set's.

The floor, 0.77 test Precision @ 1: the recipe reaches about 0.80 (the data's README);
seeds 1 to 4 gave 0.7939 to 0.7979, so 0.77 is six of those spreads below the worst, and
the same run halfway (step 999) is at 0.747, under the floor: a run that learns half as
well as it should fails. Chance is 0.10.
"""

import re

import numpy as np
import pytest

import mnistc
from mnistc import data, datasets
from mnistc.restore import load

from conftest import import_or_skip
from test_eval_predict import EVAL_LINE, assert_one_line_error, pgm_p5, run_module

pytestmark = pytest.mark.realdata
FLOOR = 0.77
NAMES = datasets.FASHION_MNIST.class_names
CLASS_LINE = re.compile(r"^  (\d) (.+?) *: (\d\.\d{4})  \((\d+)/(\d+)\)$")


def test_the_files_are_the_ones_the_readme_describes(fashion_mnist_dir):
    datasets.verify_checksums(datasets.FASHION_MNIST, fashion_mnist_dir)
    listed = dict(
        reversed(line.split())
        for line in (fashion_mnist_dir / "SHA256SUMS").read_text().splitlines()
        if line.strip()
    )
    assert listed == datasets.FASHION_MNIST.sha256
    sets = data.read_data_sets(
        str(fashion_mnist_dir), validation_size=0, download=False, dataset="fashion-mnist"
    )
    train, test = sets.train, sets.test
    assert train.images.shape == (60000, 784) and test.images.shape == (10000, 784)
    np.testing.assert_array_equal(train.labels[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    np.testing.assert_array_equal(test.labels[:10], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), [1000] * 10)
    assert NAMES == (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )


@pytest.fixture(scope="module")
def fashion_run(fashion_mnist_dir, tmp_path_factory):
    """The tutorial's run on Fashion-MNIST, by the command line: (data dir, train dir,
    the last printed (examples, correct) of the train, validation and test splits)."""
    root = tmp_path_factory.mktemp("fashion")
    result = run_module(
        "train",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(fashion_mnist_dir),
        "--train-dir",
        "run",
        "--no-download",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    counts = [
        (int(m.group(1)), int(m.group(2)))
        for m in map(EVAL_LINE.match, result.stdout.splitlines())
        if m
    ]
    assert [n for n, _ in counts] == [55000, 5000, 10000] * 2, result.stdout  # steps 1000, 2000
    return fashion_mnist_dir, root / "run", dict(zip(("train", "validation", "test"), counts[3:]))


def test_tutorial_recipe_reaches_the_floor(fashion_run):
    _, train_dir, counts = fashion_run
    n, correct = counts["test"]
    assert correct / n >= FLOOR, f"test Precision @ 1 {correct / n:.4f} < {FLOOR}"
    model = load(train_dir)
    assert model.global_step == 2000
    assert model.meta.dataset == "fashion-mnist" and model.class_names == NAMES


def test_eval_prints_the_class_names(fashion_run, tmp_path):
    data_dir, train_dir, counts = fashion_run
    result = run_module(
        "eval",
        "--train-dir",
        str(train_dir),
        "--data-dir",
        str(data_dir),
        "--no-download",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("(step 2000, fashion-mnist)")
    head = [m for m in map(EVAL_LINE.match, lines) if m]
    assert [(int(m.group(1)), int(m.group(2))) for m in head] == [counts["test"]]
    classes = [m for m in map(CLASS_LINE.match, lines) if m]
    assert [(int(m.group(1)), m.group(2)) for m in classes] == list(enumerate(NAMES))
    assert all(m.group(5) == "1000" for m in classes)


def test_predict_prints_the_class_name(fashion_run, tmp_path):
    data_dir, train_dir, _ = fashion_run
    test = data.read_data_sets(str(data_dir), download=False, dataset="fashion-mnist").test
    predicted, _ = load(train_dir).predict(test.images)
    files, expected = [], []
    for c in (9, 0):  # Ankle boot, and T-shirt/top: a name with a slash
        for i in np.flatnonzero((test.labels == c) & (predicted == c))[:2]:
            files.append(f"test{i}.pgm")
            (tmp_path / files[-1]).write_bytes(pgm_p5(test.images[i].reshape(28, 28)))
            expected.append(f"class {c} {NAMES[c]}")
    result = run_module("predict", "--train-dir", str(train_dir), *files, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(files) == 4
    for line, name, label in zip(lines, files, expected):
        assert re.fullmatch(rf"{name}: {re.escape(label)} \(probability \d\.\d{{4}}\)", line)


def test_another_data_set_is_a_clear_error(fashion_run, real_mnist_dir, tmp_path):
    data_dir, train_dir, _ = fashion_run
    before = {p.name: p.read_bytes() for p in train_dir.glob("checkpoint*")}
    result = run_module(
        "train",
        "--dataset",
        "mnist",
        "--resume",
        "--train-dir",
        str(train_dir),
        "--data-dir",
        str(real_mnist_dir),
        "--no-download",
        cwd=tmp_path,
    )
    assert_one_line_error(
        result,
        "train",
        "checkpoint-2000.safetensors",
        "was trained with dataset='fashion-mnist', not 'mnist'",
    )
    assert {p.name: p.read_bytes() for p in train_dir.glob("checkpoint*")} == before
    result = run_module(
        "eval",
        "--train-dir",
        str(train_dir),
        "--dataset",
        "mnist",
        "--data-dir",
        str(real_mnist_dir),
        "--no-download",
        cwd=tmp_path,
    )
    assert_one_line_error(result, "eval", "was trained on fashion-mnist, not mnist")
    (tmp_path / "image.pgm").write_bytes(pgm_p5(np.zeros((28, 28), np.uint8)))
    result = run_module(
        "predict", "--train-dir", str(train_dir), "--dataset", "mnist", "image.pgm", cwd=tmp_path
    )
    assert_one_line_error(result, "predict", "was trained on fashion-mnist, not mnist")


def test_the_picture_names_the_classes(fashion_run):
    matplotlib = import_or_skip("matplotlib", "test")
    data_dir, train_dir, counts = fashion_run
    figure = mnistc.plot(train_dir, data_dir=data_dir, download=False)
    assert isinstance(figure, matplotlib.figure.Figure)
    n, correct = counts["test"]
    assert figure.get_suptitle().endswith(
        f"MLP on Fashion-MNIST, step 2000, test Precision @ 1 = {correct / n:.4f}"
    )
    (matrix,) = [a for a in figure.get_axes() if a.get_title() == "Test confusion matrix"]
    assert tuple(t.get_text() for t in matrix.get_xticklabels()) == NAMES
    titles = [a.get_title() for a in figure.get_axes() if a.get_title().startswith("true ")]
    assert len(titles) == 16
    for title in titles:
        true_line, predicted_line = title.split("\n")
        assert true_line.removeprefix("true ") in NAMES
        assert predicted_line.removeprefix("pred ").rsplit(" (", 1)[0] in NAMES
