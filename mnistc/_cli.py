"""What mnistc's three command lines (train, eval, predict) share: an argparse parser
whose errors are one line with exit status 2, the --threads option, and the mapping of
mnistc's exceptions to exit statuses. No command logic lives here."""
import argparse
import sys

from .errors import MnistcError, TrainingError


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
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for the kernels (default: $OMP_NUM_THREADS, else "
                             "all cores)")


def run(parser, command):
    """Call command(); turn mnistc's failures into one line and an exit status: 1 for a
    training failure (e.g. a NaN loss), 2 for bad input, 130 for Ctrl-C."""
    try:
        return command() or 0
    except TrainingError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except (MnistcError, ValueError) as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
