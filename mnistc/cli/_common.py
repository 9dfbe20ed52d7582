"""What mnistc's command lines share: an argparse parser whose errors are one line with
exit status 2, the options several tools take, and the mapping of failures to exit
statuses. No command logic lives here."""

import argparse
import sys
from pathlib import Path

from .. import datasets, runtime
from ..config import TrainConfig
from ..errors import MnistcError, TrainingError
from ..runlog import silence_stdout


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line `prog: error: ...` and exit status 2, without
    the usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text):
    """argparse type for counts that must be >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_threads_option(parser):
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="threads for the kernels (default: $OMP_NUM_THREADS, else all cores)",
    )


def add_isa_option(parser):
    from .. import _kernels

    parser.add_argument(
        "--isa",
        choices=_kernels.ISA_NAMES,
        default=None,
        help="cap the CPU target (same as MNISTC_ISA)",
    )


def add_data_options(parser, with_dataset=True):
    """--dataset, --data-dir, --no-download (train, eval, predict)."""
    if with_dataset:
        parser.add_argument(
            "--dataset",
            choices=list(datasets.REGISTRY),
            default=None,
            help=f"which data set (default: {datasets.DEFAULT}; eval: the checkpoint's)",
        )
    parser.add_argument(
        "--data-dir",
        "--data_dir",
        "--input_data_dir",
        default=None,
        help="folder with the data set's IDX files (.gz or raw); default: "
        "$MNISTC_DATA_DIR (MNIST), else ./data/<dataset>, else "
        "~/.cache/mnistc/<dataset> (downloaded)",
    )
    parser.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="never fetch missing data files",
    )


def checkpoint_arg(text):
    """--checkpoint: a step number (of --train-dir) or a checkpoint file."""
    return int(text) if text.isdigit() else Path(text)


def add_checkpoint_options(parser):
    """--train-dir and --checkpoint (eval, predict, export, plot)."""
    parser.add_argument(
        "--train-dir",
        "--train_dir",
        "--log_dir",
        default=TrainConfig.train_dir,
        help="the training run's folder; its newest readable checkpoint "
        f"is used (default: {TrainConfig.train_dir})",
    )
    parser.add_argument(
        "--checkpoint",
        type=checkpoint_arg,
        default=None,
        metavar="STEP_OR_FILE",
        help="a step of --train-dir, or a checkpoint file (a relative name "
        "is looked for in the working directory, then in --train-dir)",
    )


def load_from_args(args):
    """The model named by --train-dir/--checkpoint (see add_checkpoint_options)."""
    from ..restore import load

    source = args.checkpoint
    if source is None or isinstance(source, int):
        return load(args.train_dir, step=source)
    if not source.exists() and not source.is_absolute():
        in_train_dir = Path(args.train_dir) / source
        if in_train_dir.exists():
            source = in_train_dir
    return load(source)


def run(parser, command, isa=None):
    """Check the environment, cap the CPU target at `isa` (--isa) if given, call
    command(); turn failures into one line and an exit status: 1 for a training failure
    (e.g. a NaN loss), 2 for bad input or a failed write, 130 for Ctrl-C, 141 (SIGPIPE's)
    when stdout was closed, silently."""
    try:
        runtime.check_environment()
        if isa is not None:
            from .. import _kernels

            _kernels.set_isa(isa)
        status = command() or 0
        sys.stdout.flush()  # a closed pipe or a full disk shows here, not at the exit
        return status
    except TrainingError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except (MnistcError, ValueError) as exc:
        parser.error(str(exc))
    except MemoryError:
        parser.error("out of memory (a smaller model, batch or input would fit)")
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        silence_stdout()
        return 141
    except OSError as exc:  # stdout on a full disk, mostly: what is unwritten is lost
        silence_stdout()
        where = str(exc.filename) if exc.filename else "cannot write the output"
        parser.error(f"{where}: {exc.strerror or exc}")
