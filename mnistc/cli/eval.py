"""`python -m mnistc.eval`: evaluate a trained checkpoint on a whole split.

Prints the tutorial's precision line, the per-class accuracy (with the data set's class
names) and a confusion matrix; --json prints the same as one object. The split is formed
exactly as the training run formed it (its data set and validation size, from the
checkpoint). It writes nothing.
"""

import argparse
import json
import sys

import numpy as np

from .. import data, evaluation, runtime
from ..errors import CheckpointError
from ..evaluation import evaluate, format_report
from . import _common

SPLITS = ("train", "validation", "test")
TITLES = {"train": "Training", "validation": "Validation", "test": "Test"}


def build_parser():
    p = _common.Parser(
        prog="mnistc.eval",
        description=__doc__.split("\n\n")[0],
        epilog=evaluation.__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common.add_checkpoint_options(p)
    p.add_argument(
        "--split", choices=SPLITS, default="test", help="which split to evaluate (default: test)"
    )
    _common.add_data_options(p)
    p.add_argument(
        "--fake-data",
        "--fake_data",
        action="store_true",
        help="evaluate on the tutorial's constant fake data",
    )
    p.add_argument(
        "--validation-size",
        "--validation_size",
        type=int,
        default=None,
        help="training examples held out for validation (default: the "
        "checkpoint's run setting, so the split is formed as in training)",
    )
    _common.add_threads_option(p)
    _common.add_isa_option(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print the result as one JSON object instead of the text report",
    )
    return p


def run_eval(args):
    """Restore, read the split, evaluate; returns (model, result dict)."""
    if args.validation_size is not None and args.validation_size < 0:
        raise ValueError(f"--validation-size must be >= 0, got {args.validation_size}")
    model = _common.load_from_args(args)
    meta = model.meta
    if args.dataset is not None and args.dataset != meta.dataset:
        raise CheckpointError(
            f"{model.checkpoint_path}: was trained on {meta.dataset}, not "
            f"{args.dataset}; evaluate it on its own data set"
        )
    validation_size = meta.validation_size if args.validation_size is None else args.validation_size
    sets = data.read_data_sets(
        args.data_dir,
        fake_data=args.fake_data,
        validation_size=validation_size,
        rng=np.random.default_rng(0),
        download=args.download,
        dataset=meta.dataset,
    )
    return model, evaluate(model, getattr(sets, args.split), runtime.resolve_threads(args.threads))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    def command():
        model, result = run_eval(args)
        if args.json:
            out = dict(
                result,
                confusion=result["confusion"].tolist(),
                split=args.split,
                checkpoint=str(model.checkpoint_path),
                global_step=model.global_step,
                dataset=model.meta.dataset,
                class_names=list(model.class_names),
            )
            print(json.dumps(out))
            return
        print(
            f"Checkpoint {model.checkpoint_path} (step {model.global_step}, {model.meta.dataset})"
        )
        print(f"{TITLES[args.split]} Data Eval:")
        for line in format_report(result, model.class_names):
            print(line)

    return _common.run(parser, command, isa=args.isa)


if __name__ == "__main__":
    sys.exit(main())
