"""Pictures of a training run: ``mnistc.plot("runs/mnistc")`` -> a matplotlib Figure.

One figure, four panels: the training loss and the three precisions against the step (from
the run's summaries.jsonl), the test split's confusion matrix as a heat map, and the test
images the model misclassifies most confidently, with their true and predicted classes
(the checkpoint's class names). The test split is formed as `python -m mnistc.eval` forms
it and evaluated with mnistc.evaluation (a prediction is the argmax of the logits).

The figure is a plain `matplotlib.figure.Figure` drawn by the Agg canvas: no pyplot, so
importing this module or making a figure never touches a notebook's backend or global
state. matplotlib is an optional extra (``pip install "mnistc[plot]"``).
"""

import io
from pathlib import Path

import numpy as np

from . import data, datasets
from .errors import MnistcError
from .evaluation import evaluate
from .fileio import atomic_write
from .runlog import SUMMARIES_FILE, read_records

PLOT_HINT = 'plotting needs matplotlib: pip install "mnistc[plot]"'
SPLIT_STYLES = {"train": "tab:blue", "validation": "tab:orange", "test": "tab:green"}
ERROR_GRID = (4, 4)  # rows, columns of the misclassified images


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MnistcError(PLOT_HINT) from None
    return Figure, FigureCanvasAgg


def run_figure(train_dir, model, *, data_dir=None, download=True):
    """The figure of the run in `train_dir` (its curves) and of `model` (one of its
    checkpoints, from mnistc.load: the test confusion matrix and misclassified images, on
    the test split read from `data_dir` as mnistc.data.read_data_sets reads it)."""
    Figure, FigureCanvasAgg = _matplotlib()
    train_dir = Path(train_dir)
    meta = model.meta
    sets = data.read_data_sets(
        data_dir,
        fake_data=meta.fake_data,
        validation_size=meta.validation_size,
        rng=np.random.default_rng(0),
        download=download,
        dataset=meta.dataset,
    )
    test = sets.test
    result = evaluate(model, test)
    predicted, probabilities = model.predict(test.images)

    figure = Figure(figsize=(13, 9.5), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subfigures(2, 1, height_ratios=(1, 1.45))
    loss_axes, precision_axes = top.subplots(1, 2, sharex=True)
    matrix_figure, errors_figure = bottom.subfigures(1, 2, width_ratios=(1, 1.1))
    records = read_records(train_dir / SUMMARIES_FILE)
    _curves(loss_axes, precision_axes, records, train_dir)
    _confusion(matrix_figure, result["confusion"], model.class_names)
    _misclassified(errors_figure, test, predicted, probabilities, model.class_names)
    title = datasets.get(meta.dataset).title if not meta.fake_data else "fake data"
    figure.suptitle(
        f"{train_dir}: {'-'.join(map(str, model.sizes))} MLP on {title}, "
        f"step {model.global_step}, test Precision @ 1 = "
        f"{result['precision']:.4f}",
        fontsize=14,
    )
    return figure


def _curves(loss_axes, precision_axes, records, train_dir):
    def series(tag):
        points = [(r["step"], r["value"]) for r in records if r.get("tag") == tag]
        return tuple(zip(*points)) if points else ((), ())

    steps, loss = series("loss")
    loss_axes.plot(steps, loss, color="tab:red", marker=".")
    loss_axes.set(title="Training loss (one batch)", xlabel="step", ylabel="cross-entropy loss")
    for split, color in SPLIT_STYLES.items():
        steps, precision = series(f"precision/{split}")
        final = f", final {precision[-1]:.4f}" if precision else ""
        precision_axes.plot(steps, precision, color=color, marker="o", label=split + final)
    precision_axes.set(title="Precision @ 1 (whole splits)", xlabel="step", ylabel="precision")
    precision_axes.legend(loc="best")
    for axes in (loss_axes, precision_axes):
        axes.grid(alpha=0.3)
        if not records:
            axes.text(
                0.5,
                0.5,
                f"no records in {train_dir / SUMMARIES_FILE}",
                transform=axes.transAxes,
                ha="center",
                va="center",
            )


def _confusion(subfigure, confusion, class_names):
    from matplotlib.colors import LogNorm

    axes = subfigure.subplots()
    classes = len(class_names)
    # Log colours: the diagonal holds most of the counts, and the errors (tens) would
    # all look alike on a linear scale. Empty cells stay white.
    shown = np.ma.masked_equal(confusion, 0)
    image = axes.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(confusion.max(), 2)))
    subfigure.colorbar(image, ax=axes, shrink=0.8, label="test images")
    dark = np.sqrt(max(confusion.max(), 1))
    for (row, column), count in np.ndenumerate(confusion):
        if count:
            axes.text(
                column,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if count > dark else "black",
            )
    names = list(class_names)
    if any(name != str(c) for c, name in enumerate(names)):  # words, not digits: slant them
        axes.set_xticks(range(classes), names, rotation=45, ha="right")
    else:
        axes.set_xticks(range(classes), names)
    axes.set_yticks(range(classes), names)
    axes.set(title="Test confusion matrix", xlabel="predicted class", ylabel="true class")


def _misclassified(subfigure, test, predicted, probabilities, class_names):
    wrong = np.flatnonzero(predicted != test.labels)
    confidence = probabilities[wrong, predicted[wrong]]
    chosen = wrong[np.argsort(-confidence, kind="stable")][: ERROR_GRID[0] * ERROR_GRID[1]]
    subfigure.suptitle(
        f"Most confidently misclassified test images ({wrong.size} of {test.num_examples} wrong)",
        fontsize="large",
    )
    grid = subfigure.subplots(*ERROR_GRID, squeeze=False)
    side = int(round(np.sqrt(test.images.shape[1])))
    for axes, index in zip(grid.flat, chosen):
        axes.imshow(test.images[index].reshape(side, side), cmap="gray", vmin=0, vmax=255)
        axes.set_title(
            f"true {class_names[test.labels[index]]}\n"
            f"pred {class_names[predicted[index]]} "
            f"({probabilities[index, predicted[index]]:.2f})",
            fontsize=9,
        )
    for axes in grid.flat:
        axes.set_axis_off()


def plot_run(train_dir, step=None, *, output=None, data_dir=None, download=True):
    """run_figure of the checkpoint mnistc.load(train_dir, step), also written to `output`
    (see save_figure) when given: the API's mnistc.plot."""
    from .restore import load

    figure = run_figure(train_dir, load(train_dir, step), data_dir=data_dir, download=download)
    if output is not None:
        save_figure(figure, output)
    return figure


def save_figure(figure, output, dpi=100):
    """Write `figure` to `output` atomically, in the format its suffix names (.png, .svg,
    .pdf, ...); ValueError for an unknown suffix, MnistcError naming the file when it
    cannot be written."""
    output = Path(output)
    formats = figure.canvas.get_supported_filetypes()
    kind = output.suffix.lstrip(".").lower()
    if kind not in formats:
        raise ValueError(
            f"{output}: unknown image format {output.suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join('.' + f for f in sorted(formats))}"
        )
    buffer = io.BytesIO()
    figure.savefig(buffer, format=kind, dpi=dpi)
    try:
        atomic_write(output, [buffer.getvalue()])
    except OSError as error:
        raise MnistcError(f"{output}: cannot write: {error.strerror or error}") from None
    return output
