"""`python -m mnistc.train`: train an MLP, by default the Mechanics 101 run.

This is fully_connected_feed.py's command line: the same flags and defaults, the same
printed lines (`Step N: loss = X (T sec)`, the three `... Data Eval:` blocks), a checkpoint
and an evaluation every 1000 steps and at the last one. On top: --recipe, optimizers,
learning-rate schedules, --epochs, data sets, exact --resume (mnistc.training).
"""

import argparse
import sys

from .. import config as config_module
from ..recipes import RECIPES
from . import _common

# Flags whose default comes from the recipe: argparse leaves them None unless given.
_RECIPE_FLAGS = {
    "learning_rate": float,
    "max_steps": int,
    "epochs": float,
    "batch_size": int,
    "optimizer": str,
    "momentum": float,
    "weight_decay": float,
    "beta1": float,
    "beta2": float,
    "eps": float,
    "schedule": str,
    "warmup_steps": int,
    "final_lr": float,
    "pct_start": float,
    "div_factor": float,
    "final_div_factor": float,
    "checkpoint_every": int,
    "checkpoint_every_epochs": int,
    "seed": int,
    "validation_size": int,
    "dataset": str,
    "label_smoothing": float,
}


def _widths(text):
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be >= 1, got {text!r}")
    return widths


def _splits(text):
    splits = tuple(s for s in text.split(",") if s)
    unknown = [s for s in splits if s not in config_module.SPLITS]
    if not splits or unknown:
        raise argparse.ArgumentTypeError(
            f"expected some of {','.join(config_module.SPLITS)}, got {text!r}"
        )
    return splits


def build_parser():
    d = config_module.TrainConfig()
    p = _common.Parser(prog="mnistc.train", description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add(
        "--recipe",
        choices=list(RECIPES),
        default="tutorial",
        help="a named set of the settings below (default: tutorial); flags given override it",
    )
    add(
        "--learning-rate",
        "--learning_rate",
        type=float,
        help=f"the learning rate, or a schedule's peak/start (default: {d.learning_rate})",
    )
    add(
        "--schedule",
        choices=["constant", "linear", "cosine", "one-cycle"],
        help=f"learning-rate schedule (default: {d.schedule})",
    )
    add("--warmup-steps", type=int, help="linear warm-up steps before the schedule (default: 0)")
    add("--final-lr", type=float, help="where linear and cosine decay end (default: 0)")
    add(
        "--pct-start", type=float, help=f"one-cycle: share of steps rising (default: {d.pct_start})"
    )
    add(
        "--div-factor",
        type=float,
        help=f"one-cycle: start = peak / this (default: {d.div_factor:g})",
    )
    add(
        "--final-div-factor",
        type=float,
        help=f"one-cycle: end = start / this (default: {d.final_div_factor:g})",
    )
    add(
        "--label-smoothing",
        type=float,
        help="targets (1 - e)*onehot + e/classes in the loss, torch's (default: 0)",
    )
    add(
        "--optimizer",
        choices=list(config_module.OPTIMIZERS),
        help=f"update rule, torch.optim's formulas (default: {d.optimizer})",
    )
    add("--momentum", type=float, help="momentum, nesterov: the momentum (default: 0.9)")
    add(
        "--weight-decay",
        type=float,
        help="L2 weight decay; adamw: decoupled (default: 0; adamw: 0.01)",
    )
    add("--beta1", type=float, help="adam, adamw (default: 0.9)")
    add("--beta2", type=float, help="adam, adamw (default: 0.999)")
    add("--eps", type=float, help="adam, adamw (default: 1e-8)")
    add(
        "--max-steps",
        "--max_steps",
        type=int,
        help="train until the global step reaches this "
        f"(default: {config_module.DEFAULT_MAX_STEPS})",
    )
    add(
        "--epochs",
        type=float,
        help="train for this many passes over the training split instead: "
        "ceil(epochs * N / batch-size) steps",
    )
    add("--hidden1", type=int, help="units in hidden layer 1 (default: 128)")
    add("--hidden2", type=int, help="units in hidden layer 2 (default: 32)")
    add(
        "--hidden",
        type=_widths,
        help="any number of hidden widths, e.g. 512,256 (overrides --hidden1/2)",
    )
    add(
        "--batch-size",
        "--batch_size",
        type=int,
        help=f"examples per step (default: {d.batch_size})",
    )
    add(
        "--fake-data",
        "--fake_data",
        action="store_true",
        default=None,
        help="train on constant fake data (for testing)",
    )
    add("--nofake_data", dest="fake_data", action="store_false", help=argparse.SUPPRESS)
    _common.add_data_options(p)
    add(
        "--checkpoint-every",
        type=int,
        help=f"checkpoint and evaluate every this many steps (default: "
        f"{config_module.DEFAULT_CHECKPOINT_EVERY}; with --epochs, every epoch)",
    )
    add(
        "--checkpoint-every-epochs",
        type=int,
        help="with --epochs: checkpoint and evaluate every this many epochs; 0: only at "
        "the end (default: 1)",
    )
    add(
        "--eval-splits",
        type=_splits,
        help="which splits each evaluation covers (default: train,validation,test)",
    )
    add(
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        help="write no TensorBoard event files",
    )
    add(
        "--train-dir",
        "--train_dir",
        "--log_dir",
        default=d.train_dir,
        help="where checkpoints and summaries go (default: %(default)s)",
    )
    add(
        "--seed",
        type=int,
        help=f"seeds the one generator behind init and data order (default: {d.seed})",
    )
    _common.add_threads_option(p)
    add(
        "--validation-size",
        "--validation_size",
        type=int,
        help=f"training examples held out for validation (default: {d.validation_size})",
    )
    add("--resume", action="store_true", help="continue from the newest checkpoint in --train-dir")
    add(
        "--overwrite",
        action="store_true",
        help="delete the run already in --train-dir (checkpoints and logs) and start over",
    )
    _common.add_isa_option(p)
    add("--quiet", action="store_true", help="print nothing")
    return p


def config_from_args(args):
    """The TrainConfig the parsed flags describe: the recipe, then every flag given."""
    options = {
        name: getattr(args, name) for name in _RECIPE_FLAGS if getattr(args, name) is not None
    }
    if args.hidden is not None:
        options["hidden"] = args.hidden
    elif args.hidden1 is not None or args.hidden2 is not None:
        tutorial = config_module.TrainConfig().hidden
        options["hidden"] = (args.hidden1 or tutorial[0], args.hidden2 or tutorial[1])
    if args.fake_data is not None:
        options["fake_data"] = args.fake_data
    if args.eval_splits is not None:
        options["eval_splits"] = args.eval_splits
    return config_module.TrainConfig.from_recipe(
        args.recipe,
        threads=args.threads or 0,
        isa=args.isa,
        data_dir=args.data_dir,
        train_dir=args.train_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
        download=args.download,
        tensorboard=args.tensorboard,
        **options,
    )


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    def command():
        from ..training import run_training

        run_training(config_from_args(args))

    return _common.run(parser, command)


if __name__ == "__main__":
    sys.exit(main())
