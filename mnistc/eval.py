# mnistc/eval.py: `python -m mnistc.eval`, the evaluation of a saved checkpoint.
#
# It is: restore a checkpoint (mnistc.restore), rebuild the split exactly as training
# formed it, and print the tutorial's precision line, per-class accuracy and a confusion
# matrix. `evaluate(model, dataset)` gives the same numbers as a dict.
#
# It is not: training, and it writes nothing (no summaries, no checkpoints).
"""Evaluate a trained mnistc checkpoint on a whole MNIST split.

Two rules decide "correct", and both are shown:

* ``Precision @ 1`` is the tutorial's: TensorFlow's ``in_top_k(logits, label, 1)``,
  where a label whose logit ties the largest counts as a hit. It is computed by the
  same kernel call the trainer uses, so ``Num correct`` equals the trainer's count at
  the same step, to the example.
* The confusion matrix (rows: true label, columns: predicted) and the per-class
  accuracy (its diagonal over its row sums) need one predicted digit per image: the
  argmax of the logits, which breaks exact ties by the lowest index.

The two differ only on exact ties of the top logit; evaluate() counts those
(``tied_hits``), and the CLI prints a note when there are any, so that
``correct == argmax_correct + tied_hits`` always reads off the output.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import _cli, _kernels, data
from .errors import CheckpointError
from .restore import load
from .train import TrainConfig

SPLITS = ("train", "validation", "test")


def evaluate(model, dataset, n_threads=None):
    """Evaluate `model` on every example of `dataset` (a DataSet, or any object with
    uint8 `images` [N, pixels] and `labels` [N]); nothing is dropped.

    Returns a dict:
      n               number of examples
      correct         hits by the in_top_k rule (ties count), as the trainer counts
      precision       correct / n (0.0 when n == 0, as the trainer prints)
      argmax_correct  hits by argmax (ties go to the lowest index) = trace(confusion)
      tied_hits       correct - argmax_correct: label tied for the top logit, not the argmax
      per_class       one dict per class c: {"label", "n", "correct", "accuracy"} with
                      n = row sum, correct = confusion[c, c] (argmax rule),
                      accuracy = correct / n, or None when the class has no examples
      confusion       int64 [classes, classes], rows = true label, columns = argmax
    """
    images = np.ascontiguousarray(dataset.images, dtype=np.uint8)
    labels = np.ascontiguousarray(dataset.labels, dtype=np.uint8)
    classes = model.sizes[-1]
    n = int(labels.shape[0])
    # One pass gives both: the trainer's own in_top_k count (model.evaluation is this
    # call without logits) and the logits for the argmax, from the same arithmetic.
    logits = np.empty((n, classes), np.float32)
    correct = model.evaluation(images, labels, 1, logits, n_threads)
    predicted = logits.argmax(axis=1)
    confusion = np.bincount(labels.astype(np.int64) * classes + predicted,
                            minlength=classes * classes).reshape(classes, classes)
    rows = np.arange(n)
    label_logit = logits[rows, labels]
    tied = (label_logit == logits.max(axis=1)) & (predicted != labels)
    per_class = []
    for c in range(classes):
        count, hits = int(confusion[c].sum()), int(confusion[c, c])
        per_class.append({"label": c, "n": count, "correct": hits,
                          "accuracy": hits / count if count else None})
    return {
        "n": n,
        "correct": correct,
        "precision": correct / n if n else 0.0,
        "argmax_correct": int(np.trace(confusion)),
        "tied_hits": int(tied.sum()),
        "per_class": per_class,
        "confusion": confusion,
    }


def format_report(result):
    """The CLI's printed lines for an evaluate() result (a list of strings)."""
    n, correct = result["n"], result["correct"]
    lines = [f"  Num examples: {n}  Num correct: {correct}  "
             f"Precision @ 1: {result['precision']:0.04f}"]
    lines.append("Per-class accuracy (predicted = argmax of the logits; a tie goes to "
                 "the lowest digit):")
    for entry in result["per_class"]:
        acc = "   n/a" if entry["accuracy"] is None else f"{entry['accuracy']:0.04f}"
        lines.append(f"  {entry['label']}: {acc}  ({entry['correct']}/{entry['n']})")
    confusion = result["confusion"]
    width = max(5, len(str(int(confusion.max()) if confusion.size else 0)) + 1)
    lines.append("Confusion matrix (rows: true label, columns: predicted):")
    lines.append("    " + "".join(f"{c:>{width}}" for c in range(confusion.shape[1])))
    for c, row in enumerate(confusion):
        lines.append(f"  {c:>2}" + "".join(f"{int(v):>{width}}" for v in row))
    if result["tied_hits"]:
        lines.append(f"Note: in {result['tied_hits']} examples the label ties a lower "
                     "digit for the largest logit: Precision @ 1 counts them as hits, the "
                     "argmax (per class, matrix) as the lower digit: "
                     f"{correct} = {result['argmax_correct']} + {result['tied_hits']}")
    return lines


# ----------------------------------------------------------------------------------
# Command line

def checkpoint_arg(text):
    """--checkpoint: a step number (of --train-dir) or a checkpoint file."""
    return int(text) if text.isdigit() else Path(text)


def add_checkpoint_flags(parser):
    """--train-dir and --checkpoint, shared with mnistc.predict."""
    parser.add_argument("--train-dir", "--train_dir", "--log_dir",
                        default=TrainConfig.train_dir,
                        help="the training run's folder; its newest readable checkpoint "
                             f"is used (default: {TrainConfig.train_dir})")
    parser.add_argument("--checkpoint", type=checkpoint_arg, default=None,
                        metavar="STEP_OR_FILE",
                        help="a step of --train-dir, or a checkpoint file (a relative name "
                             "is looked for in the working directory, then in --train-dir)")


def load_from_args(args):
    """The model named by --train-dir/--checkpoint (see add_checkpoint_flags)."""
    source = args.checkpoint
    if source is None or isinstance(source, int):
        return load(args.train_dir, step=source)
    if not source.exists() and not source.is_absolute():
        in_train_dir = Path(args.train_dir) / source
        if in_train_dir.exists():
            source = in_train_dir
    return load(source)


def build_parser():
    p = _cli.Parser(prog="mnistc.eval", description=__doc__.split("\n\n")[0],
                    epilog=__doc__.split("\n\n", 1)[1],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_flags(p)
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="which split to evaluate (default: test)")
    p.add_argument("--data-dir", "--data_dir", "--input_data_dir", default=None,
                   help="folder with the MNIST IDX files (default: as for mnistc.train)")
    p.add_argument("--fake-data", "--fake_data", action="store_true",
                   help="evaluate on the tutorial's constant fake data")
    p.add_argument("--validation-size", "--validation_size", type=int, default=None,
                   help="training examples held out for validation (default: the "
                        "checkpoint's run setting, so the split is formed as in training)")
    _cli.add_threads_option(p)
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="never fetch missing data files")
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON object instead of the text report")
    return p


def _validation_size(model, given):
    if given is not None:
        return given, None
    try:
        run = json.loads(model.metadata["run"])
        size = run["validation_size"]
    except (KeyError, ValueError, TypeError):
        return TrainConfig.validation_size, (
            f"warning: {model.checkpoint_path} does not record its validation_size; "
            f"using {TrainConfig.validation_size} (pass --validation-size to choose)")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise CheckpointError(f"{model.checkpoint_path}: metadata \"run\" has a bad "
                              f"validation_size {size!r}")
    return size, None


def run_eval(args):
    """Restore, read the split, evaluate; returns (model, split name, result dict)."""
    model = load_from_args(args)
    validation_size, warning = _validation_size(model, args.validation_size)
    if warning and args.split != "test":
        print(warning, file=sys.stderr, flush=True)
    if model.sizes[0] != data.IMAGE_PIXELS or model.sizes[-1] != data.NUM_CLASSES:
        raise CheckpointError(f"{model.checkpoint_path}: a {list(model.sizes)} network is "
                              f"not an MNIST classifier ({data.IMAGE_PIXELS} inputs, "
                              f"{data.NUM_CLASSES} classes)")
    sets = data.read_data_sets(args.data_dir, fake_data=args.fake_data,
                               validation_size=validation_size,
                               rng=np.random.default_rng(0), download=args.download)
    n_threads = args.threads or _kernels.max_threads()
    return model, evaluate(model, getattr(sets, args.split), n_threads)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.validation_size is not None and args.validation_size < 0:
        parser.error(f"--validation-size must be >= 0, got {args.validation_size}")

    def command():
        model, result = run_eval(args)
        if args.json:
            out = dict(result, confusion=result["confusion"].tolist(), split=args.split,
                       checkpoint=str(model.checkpoint_path), global_step=model.global_step)
            print(json.dumps(out))
            return
        title = {"train": "Training", "validation": "Validation", "test": "Test"}[args.split]
        print(f"Checkpoint {model.checkpoint_path} (step {model.global_step})")
        print(f"{title} Data Eval:")
        for line in format_report(result):
            print(line)
    return _cli.run(parser, command)


if __name__ == "__main__":
    sys.exit(main())
