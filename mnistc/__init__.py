"""mnistc: TensorFlow's Mechanics 101 MNIST trainer on from-scratch C kernels.

The package's Python API mirrors the CLI: `mnistc.train(...)` runs `python -m
mnistc.train` in-process and returns its summary; `mnistc.load(train_dir)` returns the
trained model (`model.predict(images)`); `mnistc.show_config()` prints how the extension
was built and which CPU target it uses.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "train", "load", "show_config", "MnistcError", "DataError",
           "DownloadError", "CheckpointError", "TrainingError"]

from .errors import CheckpointError, DataError, DownloadError, MnistcError, TrainingError

try:
    from . import _kernels  # noqa: F401  (fail here, with advice, rather than deep inside)
except ImportError as exc:  # pragma: no cover - depends on how mnistc was installed
    raise ImportError(
        f"mnistc's compiled extension could not be imported ({exc}). If you are running "
        "from a clone of the repository, build it in place with `pip install -e .` (a "
        "plain `pip install .` installs into site-packages, which the source folder "
        "shadows when Python starts from it)") from exc


def train(**options):
    """Run the tutorial's training in-process and return its summary dict.

    Options are TrainConfig's fields (hidden=(128, 32), batch_size=100,
    learning_rate=0.01, max_steps=2000, seed=1, fake_data=False, data_dir=None,
    train_dir="runs/mnistc", threads=0, resume=False, overwrite=False, quiet=True ...).
    Once the mnistc.train module is imported it takes this name; it is callable with
    the same meaning.
    """
    from .train import train as _train

    return _train(**options)


def load(path, step=None, **options):
    """Rebuild a trained MLP from a train dir or checkpoint file; the model's
    `predict(images)` then classifies uint8 images [N, 784] (see mnistc.restore.load)."""
    from .restore import load as _load

    return _load(path, step, **options)


def show_config(file=None):
    """Print the version, build flags, OpenMP, threads and the CPU target in use."""
    from .info import config_text

    print(config_text(), file=file)
