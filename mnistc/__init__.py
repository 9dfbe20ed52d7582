"""mnistc: TensorFlow's Mechanics 101 MNIST trainer on from-scratch C kernels.

The package's Python API mirrors the CLI: `mnistc.train(...)` runs `python -m
mnistc.train` in-process and returns its summary; `mnistc.show_config()` prints how the
extension was built and which CPU target it uses.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "train", "show_config", "MnistcError", "DataError",
           "DownloadError", "CheckpointError", "TrainingError"]

from .errors import CheckpointError, DataError, DownloadError, MnistcError, TrainingError


def train(**options):
    """Run the tutorial's training in-process and return its summary dict.

    Options are TrainConfig's fields (hidden=(128, 32), batch_size=100,
    learning_rate=0.01, max_steps=2000, seed=1, fake_data=False, data_dir=None,
    train_dir="runs/mnistc", threads=0, resume=False, overwrite=False, quiet=True ...).
    """
    from .train import TrainConfig, run_training

    options.setdefault("quiet", True)
    if "hidden" in options:
        options["hidden"] = tuple(options["hidden"])
    return run_training(TrainConfig(**options))


def show_config(file=None):
    """Print the version, build flags, OpenMP, threads and the CPU target in use."""
    from .info import config_text

    print(config_text(), file=file)
