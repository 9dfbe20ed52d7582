"""mnistc: TensorFlow's Mechanics 101 MNIST trainer on from-scratch C kernels.

The package's Python API mirrors the command lines: `mnistc.train(...)` runs `python -m
mnistc.train` in-process and returns its summary; `mnistc.load(train_dir)` returns the
trained model (`model.predict(images)`); `mnistc.export_onnx(...)` and `mnistc.plot(...)`
are `python -m mnistc.export` and `mnistc.plot`; `mnistc.show_config()` prints how the
extension was built and which CPU target it uses.

The modules, bottom up: `_kernels` (the C kernels' bindings); `idx`, `datasets`,
`download`, `data` (files, the registry of data sets, the batch stream); `model`,
`optim`, `schedules` (the network and its updates); `checkpoint`, `metadata` (the
checkpoint file and what it means); `config`, `recipes`, `runlog`, `lock`, `training`,
`restore`, `evaluation`, `images` (runs and their results); `onnx_export`, `plotting`
(a run for other tools and for people; optional extras); `cli` (the command lines, on
top). `mnistc/<tool>.py` is only the entry point of `python -m mnistc.<tool>`.
"""

from ._version import __version__
from .errors import CheckpointError, DataError, DownloadError, MnistcError, TrainingError

__all__ = [
    "__version__",
    "train",
    "load",
    "export_onnx",
    "plot",
    "show_config",
    "MnistcError",
    "DataError",
    "DownloadError",
    "CheckpointError",
    "TrainingError",
]

try:
    from . import _kernels  # noqa: F401  (fail here, with advice, rather than deep inside)
except ImportError as exc:  # pragma: no cover - depends on how mnistc was installed
    raise ImportError(
        f"mnistc's compiled extension could not be imported ({exc}). If you are running "
        "from a clone of the repository, build it in place with `pip install -e .` (a "
        "plain `pip install .` installs into site-packages, which the source folder "
        "shadows when Python starts from it)"
    ) from exc


def train(recipe="tutorial", **options):
    """Train in-process as `python -m mnistc.train` would and return its summary dict.

    recipe: "tutorial" (the default, Mechanics 101) or "fast"; options are
    mnistc.config.TrainConfig's fields and override the recipe (hidden=(128, 32),
    batch_size=100, optimizer="sgd", learning_rate=0.01, schedule="constant",
    max_steps=2000 or epochs=..., seed=1, dataset="mnist", data_dir=None,
    train_dir="runs/mnistc", threads=0, resume=False, overwrite=False, quiet=True ...).
    """
    from .training import train as _train

    return _train(recipe, **options)


def load(path, step=None, **options):
    """Rebuild a trained MLP from a train dir or checkpoint file; the model's
    `predict(images)` then classifies uint8 images [N, 784] (see mnistc.restore.load)."""
    from .restore import load as _load

    return _load(path, step, **options)


def export_onnx(source, output, step=None):
    """Write a trained model (a train dir, a checkpoint file or a loaded MLP) as the ONNX
    file `output` and return its ModelProto; needs `pip install "mnistc[onnx]"` (see
    mnistc.onnx_export)."""
    from .onnx_export import export_onnx as _export_onnx

    return _export_onnx(source, output, step)


def plot(train_dir, step=None, **options):
    """The matplotlib Figure of a run: loss and precisions against the step, the test
    confusion matrix, the most confidently misclassified test images; options output=,
    data_dir=, download= (see mnistc.plotting.plot_run). Needs `pip install "mnistc[plot]"`."""
    from .plotting import plot_run

    return plot_run(train_dir, step, **options)


def show_config(file=None):
    """Print the version, build flags, OpenMP, threads and the CPU target in use."""
    from .runtime import config_text

    print(config_text(), file=file)
