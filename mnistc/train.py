"""`python -m mnistc.train`: the Mechanics 101 training run, its CLI and its Python API.

This is fully_connected_feed.py re-created: the same flags and defaults, the same
printed lines (`Step N: loss = X (T sec)`, the three `... Data Eval:` blocks), a
checkpoint and an evaluation every 1000 steps and at the last one. On top of the
tutorial: exact resume (parameters, step, generator and data position are all in the
checkpoint), crash-safe checkpoints, a stop on a NaN/infinite loss, a JSON-lines log of
the summaries and a `summary.json` at the end. The SGD step itself is one C call.
"""
import argparse
import json
import math
import os
import sys
import time
import types
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import __version__, _cli, _kernels, data
from .checkpoint import CheckpointManager, warn_fallback
from .errors import CheckpointError, MnistcError, TrainingError
from .events import EventWriter
from .model import MLP

LOG_EVERY = 100
SUMMARIES_FILE = "summaries.jsonl"
SUMMARY_FILE = "summary.json"
PERMUTATION_TENSOR = "data/train_permutation"


@dataclass
class TrainConfig:
    """Everything a run depends on. The first group must match on --resume (it defines
    the run); the rest may change (a resumed run is bit-identical to an uninterrupted
    one only when learning_rate is unchanged too)."""

    hidden: tuple = (128, 32)
    batch_size: int = 100
    seed: int = 1
    fake_data: bool = False
    validation_size: int = 5000

    learning_rate: float = 0.01
    max_steps: int = 2000
    checkpoint_every: int = 1000  # checkpoint + evaluation period, in steps
    threads: int = 0  # 0: OMP_NUM_THREADS, else every core
    data_dir: str = None
    train_dir: str = "runs/mnistc"
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    download: bool = True
    tensorboard: bool = True  # write TensorBoard event files next to summaries.jsonl

    # Fields that define the run (checked against a checkpoint on resume).
    RUN_FIELDS = ("hidden", "batch_size", "seed", "fake_data", "validation_size")

    def run_identity(self):
        return {name: (list(getattr(self, name)) if name == "hidden" else getattr(self, name))
                for name in self.RUN_FIELDS}


def validate(config):
    """Reject impossible settings with a ValueError saying which flag is wrong."""
    if config.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {config.batch_size}")
    if config.max_steps < 0:
        raise ValueError(f"--max-steps must be >= 0, got {config.max_steps}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise ValueError(f"--learning-rate must be a positive number, got {config.learning_rate}")
    if not config.hidden or min(config.hidden) < 1:
        raise ValueError(f"hidden layer widths must be >= 1, got {list(config.hidden)}")
    if config.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be >= 1, got {config.checkpoint_every}")
    if config.threads < 0:
        raise ValueError(f"--threads must be >= 1, got {config.threads}")
    if config.validation_size < 0:
        raise ValueError(f"--validation-size must be >= 0, got {config.validation_size}")
    if config.resume and config.overwrite:
        raise ValueError("--resume and --overwrite contradict each other")


class _Output:
    """Prints the tutorial's lines (unless quiet), appends the JSON-lines summaries and,
    unless disabled, writes TensorBoard event files with the same scalars (the
    tutorial's SummaryWriter)."""

    def __init__(self, train_dir, quiet, first_step, tensorboard):
        self.quiet = quiet
        self.path = Path(train_dir) / SUMMARIES_FILE
        self._truncate_after(first_step)
        self.file = open(self.path, "a", encoding="utf-8")
        self.events = None
        if tensorboard:
            # purge_step hides events a killed run logged past the restored step.
            self.events = EventWriter(train_dir, purge_step=first_step if first_step else None)

    def _truncate_after(self, first_step):
        # A run killed after its last checkpoint logged steps that will now be redone:
        # keep the log consistent with the restored state.
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] < first_step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a kill
        self.path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")

    def say(self, text):
        if not self.quiet:
            print(text, flush=True)

    def scalar(self, step, tag, value):
        self.file.write(json.dumps({"step": step, "tag": tag, "value": value}) + "\n")
        self.file.flush()
        if self.events is not None:
            self.events.add_scalar(tag, value, step)

    def close(self):
        self.file.close()
        if self.events is not None:
            self.events.close()


def _do_eval(model, dataset, n_threads, out, step, tag):
    correct = model.evaluation(dataset.images, dataset.labels, 1, None, n_threads)
    n = dataset.num_examples
    precision = correct / n if n else 0.0
    out.say(f"  Num examples: {n}  Num correct: {correct}  Precision @ 1: {precision:0.04f}")
    out.scalar(step, f"precision/{tag}", precision)
    return precision


def _metadata(config, model, rng, dataset):
    return {
        "global_step": str(model.global_step),
        "sizes": json.dumps(list(model.sizes)),
        "run": json.dumps(config.run_identity()),
        "learning_rate": repr(config.learning_rate),
        "rng_state": json.dumps(rng.bit_generator.state),
        "data_state": json.dumps(dataset.get_state()),
        "mnistc_version": __version__,
        "isa": _kernels.isa_active(),
    }


def _restore(manager, config, model, rng, dataset):
    """Load the newest good checkpoint into model, rng and dataset; returns its path."""
    found = manager.restore_latest(on_fallback=warn_fallback)
    if found is None:
        raise CheckpointError(f"--resume: no checkpoint in {manager.directory}")
    step, tensors, meta = found
    path = manager.path_for(step)
    try:
        saved = json.loads(meta["run"])
        sizes = json.loads(meta["sizes"])
        rng_state = json.loads(meta["rng_state"])
        data_state = json.loads(meta["data_state"])
        global_step = int(meta["global_step"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: metadata is incomplete or malformed ({exc})") from None
    if list(sizes) != list(model.sizes):
        raise CheckpointError(f"{path}: model shape {sizes} differs from the requested "
                              f"{list(model.sizes)}")
    for name, value in config.run_identity().items():
        if saved.get(name) != value:
            raise CheckpointError(f"{path}: was trained with {name}={saved.get(name)!r}, "
                                  f"not {value!r}; resume with the same setting")
    try:
        model.load_state_dict(tensors)
        rng.bit_generator.state = rng_state
        dataset.set_state(data_state, tensors.get(PERMUTATION_TENSOR, np.empty(0, np.int32)))
    except (ValueError, TypeError, KeyError, MnistcError) as exc:
        raise CheckpointError(f"{path}: cannot restore: {exc}") from None
    model.global_step = global_step
    return path


def run_training(config):
    """Train as the tutorial does; returns the run's summary (also in summary.json)."""
    validate(config)
    train_dir = Path(config.train_dir)
    try:
        train_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MnistcError(f"cannot create train dir {train_dir}: {exc.strerror}") from None
    if not os.access(train_dir, os.W_OK):
        raise MnistcError(f"train dir {train_dir} is not writable")
    manager = CheckpointManager(train_dir)
    if manager.has_checkpoints() and not config.resume and not config.overwrite:
        raise MnistcError(
            f"{train_dir} already holds checkpoints (newest: step {manager.latest_step()});"
            " pass --resume to continue that run or --overwrite to start over")

    rng = np.random.default_rng(config.seed)
    model = MLP(config.hidden, config.batch_size)
    model.initialize(rng)  # weights first, then the data order, from one generator
    sets = data.read_data_sets(config.data_dir, fake_data=config.fake_data,
                               validation_size=config.validation_size, rng=rng,
                               download=config.download)
    if config.batch_size > sets.train.num_examples:
        raise ValueError(f"--batch-size {config.batch_size} exceeds the "
                         f"{sets.train.num_examples} training examples")
    n_threads = config.threads or _kernels.max_threads()
    if config.overwrite:
        manager.remove_all()  # only now that the new run is sure to start

    restored = _restore(manager, config, model, rng, sets.train) if config.resume else None
    start = model.global_step
    out = _Output(train_dir, config.quiet, start, config.tensorboard)
    if restored is not None:
        out.say(f"Resuming from {restored} (step {start})")

    images, labels = sets.train.images, sets.train.labels
    loop_seconds = 0.0
    precision = {}
    last_saved = manager.latest_step()
    try:
        for step in range(start, config.max_steps):
            t0 = time.perf_counter()
            idx = sets.train.next_batch_indices(config.batch_size)
            loss = model.train_step(images, labels, idx, config.learning_rate, n_threads)
            duration = time.perf_counter() - t0
            loop_seconds += duration
            if not math.isfinite(loss):
                kept = f"the last good checkpoint is step {last_saved}" if last_saved \
                    else "no checkpoint was written"
                raise TrainingError(f"loss became {loss} at step {step}; training stopped "
                                    f"({kept}). Try a smaller --learning-rate")
            if step % LOG_EVERY == 0:
                out.say(f"Step {step}: loss = {loss:.2f} ({duration:.3f} sec)")
                out.scalar(step, "loss", loss)
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.max_steps:
                tensors = model.state_dict()
                tensors[PERMUTATION_TENSOR] = sets.train.permutation
                manager.save(model.global_step, tensors, _metadata(config, model, rng, sets.train))
                last_saved = model.global_step
                for title, tag, split in (("Training", "train", sets.train),
                                          ("Validation", "validation", sets.validation),
                                          ("Test", "test", sets.test)):
                    out.say(f"{title} Data Eval:")
                    precision[tag] = _do_eval(model, split, n_threads, out, step, tag)
    finally:
        out.close()

    steps_run = max(config.max_steps - start, 0)
    summary = {
        "steps": steps_run,
        "global_step": model.global_step,
        "threads": n_threads,
        "batch_size": config.batch_size,
        "train_loop_seconds": loop_seconds,
        "steps_per_second": steps_run / loop_seconds if loop_seconds > 0 else None,
        "precision": precision,
        "isa": _kernels.isa_active(),
        "mnistc_version": __version__,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
    }
    tmp = train_dir / (SUMMARY_FILE + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, train_dir / SUMMARY_FILE)
    return summary


def train(**options):
    """The Python API: run_training(TrainConfig(**options)), quiet unless told otherwise."""
    options.setdefault("quiet", True)
    if "hidden" in options:
        options["hidden"] = tuple(options["hidden"])
    return run_training(TrainConfig(**options))


class _CallableModule(types.ModuleType):
    """Importing this module makes `mnistc.train` name it rather than the package's
    train() function; calling the module keeps `mnistc.train(...)` working."""

    def __call__(self, **options):
        return train(**options)


sys.modules[__name__].__class__ = _CallableModule


# ----------------------------------------------------------------------------------
# Command line

def _hidden_list(text):
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths, got {text!r}")
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be >= 1, got {text!r}")
    return widths


def build_parser():
    p = _cli.Parser(prog="mnistc.train", description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    p.add_argument("--learning-rate", "--learning_rate", type=float, default=d.learning_rate,
                   help="SGD learning rate (constant) (default: %(default)s)")
    p.add_argument("--max-steps", "--max_steps", type=int, default=d.max_steps,
                   help="train until the global step reaches this (default: %(default)s)")
    p.add_argument("--hidden1", type=int, default=d.hidden[0], help="units in hidden layer 1 (default: %(default)s)")
    p.add_argument("--hidden2", type=int, default=d.hidden[1], help="units in hidden layer 2 (default: %(default)s)")
    p.add_argument("--hidden", type=_hidden_list, default=None,
                   help="any number of hidden widths, e.g. 512,256 (overrides --hidden1/2)")
    p.add_argument("--batch-size", "--batch_size", type=int, default=d.batch_size,
                   help="examples per SGD step (default: %(default)s)")
    p.add_argument("--fake-data", "--fake_data", action="store_true",
                   help="train on constant fake data (for testing)")
    p.add_argument("--nofake_data", dest="fake_data", action="store_false",
                   help=argparse.SUPPRESS)
    p.add_argument("--data-dir", "--data_dir", "--input_data_dir", default=None,
                   help="folder with the MNIST IDX files (.gz or raw); default: "
                        "$MNISTC_DATA_DIR, else ./data/mnist, else ~/.cache/mnistc/mnist "
                        "(downloaded)")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="never fetch missing data files")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="save a checkpoint and evaluate every this many steps (default: %(default)s)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="write no TensorBoard event files")
    p.add_argument("--train-dir", "--train_dir", "--log_dir", default=d.train_dir,
                   help="where checkpoints and summaries go (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seeds the one generator behind init and data order (default: %(default)s)")
    _cli.add_threads_option(p)
    p.add_argument("--validation-size", "--validation_size", type=int,
                   default=d.validation_size, help="training examples held out for validation (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --train-dir")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the checkpoints already in --train-dir and start over")
    p.add_argument("--isa", choices=_kernels.ISA_NAMES, default=None,
                   help="cap the CPU target (same as MNISTC_ISA)")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    return p


def config_from_args(args):
    hidden = args.hidden if args.hidden is not None else (args.hidden1, args.hidden2)
    return TrainConfig(
        hidden=tuple(hidden), batch_size=args.batch_size, learning_rate=args.learning_rate,
        seed=args.seed, fake_data=args.fake_data, validation_size=args.validation_size,
        max_steps=args.max_steps, threads=args.threads if args.threads is not None else 0,
        data_dir=args.data_dir, train_dir=args.train_dir, resume=args.resume,
        overwrite=args.overwrite, quiet=args.quiet, download=args.download,
        checkpoint_every=args.checkpoint_every, tensorboard=args.tensorboard)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    def command():
        if args.isa is not None:
            _kernels.set_isa(args.isa)
        run_training(config_from_args(args))
    return _cli.run(parser, command)


if __name__ == "__main__":
    sys.exit(main())
