"""Evaluating a model on a whole split: the tutorial's precision, per-class accuracy and a
confusion matrix.

Two rules decide "correct", and both are shown:

* ``Precision @ 1`` is the tutorial's: TensorFlow's ``in_top_k(logits, label, 1)``,
  where a label whose logit ties the largest counts as a hit. It is computed by the
  same kernel call the trainer uses, so ``Num correct`` equals the trainer's count at
  the same step, to the example.
* The confusion matrix (rows: true class, columns: predicted) and the per-class
  accuracy (its diagonal over its row sums) need one prediction per image: the argmax
  of the logits, which breaks exact ties by the lowest index.

The two differ only on exact ties of the top logit; evaluate() counts those
(``tied_hits``), and the report prints a note when there are any, so that
``correct == argmax_correct + tied_hits`` always reads off the output.
"""

import numpy as np


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
    confusion = np.bincount(
        labels.astype(np.int64) * classes + predicted, minlength=classes * classes
    ).reshape(classes, classes)
    rows = np.arange(n)
    label_logit = logits[rows, labels]
    tied = (label_logit == logits.max(axis=1)) & (predicted != labels)
    per_class = []
    for c in range(classes):
        count, hits = int(confusion[c].sum()), int(confusion[c, c])
        per_class.append(
            {"label": c, "n": count, "correct": hits, "accuracy": hits / count if count else None}
        )
    return {
        "n": n,
        "correct": correct,
        "precision": correct / n if n else 0.0,
        "argmax_correct": int(np.trace(confusion)),
        "tied_hits": int(tied.sum()),
        "per_class": per_class,
        "confusion": confusion,
    }


def format_report(result, class_names=None):
    """The CLI's printed lines for an evaluate() result (a list of strings); class names,
    when given and not just the class numbers, are printed beside the numbers."""
    n, correct = result["n"], result["correct"]
    lines = [
        f"  Num examples: {n}  Num correct: {correct}  Precision @ 1: {result['precision']:0.04f}"
    ]
    lines.append(
        "Per-class accuracy (predicted = argmax of the logits; a tie goes to the lowest class):"
    )
    entries = result["per_class"]
    names = class_names or [str(entry["label"]) for entry in entries]
    labels = [
        str(e["label"]) if name == str(e["label"]) else f"{e['label']} {name}"
        for e, name in zip(entries, names)
    ]
    width = max(map(len, labels))
    for entry, label in zip(entries, labels):
        acc = "   n/a" if entry["accuracy"] is None else f"{entry['accuracy']:0.04f}"
        lines.append(f"  {label:<{width}}: {acc}  ({entry['correct']}/{entry['n']})")
    confusion = result["confusion"]
    width = max(5, len(str(int(confusion.max()) if confusion.size else 0)) + 1)
    lines.append("Confusion matrix (rows: true class, columns: predicted):")
    lines.append("    " + "".join(f"{c:>{width}}" for c in range(confusion.shape[1])))
    for c, row in enumerate(confusion):
        lines.append(f"  {c:>2}" + "".join(f"{int(v):>{width}}" for v in row))
    if result["tied_hits"]:
        lines.append(
            f"Note: in {result['tied_hits']} examples the label ties a lower "
            "class for the largest logit: Precision @ 1 counts them as hits, the "
            "argmax (per class, matrix) as the lower class: "
            f"{correct} = {result['argmax_correct']} + {result['tied_hits']}"
        )
    return lines
