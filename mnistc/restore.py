# mnistc/restore.py: rebuild a trained MLP from a checkpoint, for evaluation and prediction.
#
# It is: `load(path, step=None)`, which finds a checkpoint (the newest good one of a
# train dir, a given step, or a named file), rebuilds the network from the shape in its
# metadata and loads the parameters. Every problem is a CheckpointError naming the file.
#
# It is not: resuming training. The trainer's own restore (mnistc.train) also puts back
# the generator and the data position and insists the run settings match; this module
# only needs the parameters, so it reads no generator or data state.
"""Load a trained model: ``mnistc.load("runs/mnistc")`` -> MLP ready for inference."""
import json
from pathlib import Path

from .checkpoint import CheckpointManager, load_file, warn_fallback
from .errors import CheckpointError
from .model import MLP

DEFAULT_BATCH_SIZE = 100  # the tutorial's; used when a checkpoint does not record its own


def _error(path, reason):
    return CheckpointError.about(Path(path), reason)


def _find(path, step, on_fallback):
    """(checkpoint file, tensors, metadata) for `path` (a train dir or a file) and `step`."""
    path = Path(path)
    if path.is_dir():
        manager = CheckpointManager(path)
        if step is None:
            found = manager.restore_latest(on_fallback=on_fallback)
            if found is None:
                raise _error(path, "no checkpoint in this directory (nothing named "
                                   "checkpoint-STEP.safetensors); train first or name a file")
            step, tensors, meta = found
            return manager.path_for(step), tensors, meta
        file = manager.path_for(step)
        if not file.is_file():
            steps = [s for s, _ in manager.list()]
            have = f"it has steps {', '.join(map(str, steps))}" if steps else "it has none"
            raise _error(file, f"no checkpoint for step {step} in {path} ({have})")
        return (file, *load_file(file))
    if step is not None:
        raise ValueError(f"step={step} applies to a train directory, but {path} is a file")
    if not path.exists():
        raise _error(path, "no such checkpoint file or train directory")
    return (path, *load_file(path))


def _sizes(file, meta):
    try:
        sizes = json.loads(meta["sizes"])
    except KeyError:
        raise _error(file, 'metadata has no "sizes" (the layer widths); not written by '
                           "mnistc.train?") from None
    except ValueError:
        raise _error(file, f'metadata "sizes" is not JSON: {meta["sizes"][:40]!r}') from None
    if (not isinstance(sizes, list) or len(sizes) < 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)):
        raise _error(file, f'metadata "sizes" must be a list of >= 3 positive widths '
                           f"(input, hidden..., classes), got {meta['sizes'][:40]!r}")
    return sizes


def _run_batch_size(file, meta):
    # The evaluation pass runs in chunks of the model's batch size; using the training
    # run's keeps every row's arithmetic identical to the trainer's own evaluations.
    if "run" not in meta:
        return DEFAULT_BATCH_SIZE
    try:
        run = json.loads(meta["run"])
    except ValueError:
        raise _error(file, f'metadata "run" is not JSON: {meta["run"][:40]!r}') from None
    batch = run.get("batch_size", DEFAULT_BATCH_SIZE) if isinstance(run, dict) else None
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise _error(file, f'metadata "run" has a bad batch_size {batch!r}')
    return batch


def load(path, step=None, *, batch_size=None, on_fallback=warn_fallback):
    """Rebuild the MLP saved in a checkpoint and return it, ready for inference.

    path: a train directory (its newest readable checkpoint; unreadable newer ones are
    skipped with a warning on stderr via `on_fallback(path, error)`), or a checkpoint
    file. step: with a directory, load checkpoint-STEP instead of the newest.
    batch_size: the chunk size of evaluation passes; default the training run's.

    The model's layer widths come from the checkpoint's "sizes" metadata; `global_step`
    is set from it, and the model gets two attributes: `checkpoint_path` (Path of the
    file loaded) and `metadata` (its str->str metadata map). Raises CheckpointError,
    naming the file, for a missing, corrupt or inconsistent checkpoint.
    """
    file, tensors, meta = _find(path, step, on_fallback)
    sizes = _sizes(file, meta)
    try:
        global_step = int(meta.get("global_step", "0"))
    except ValueError:
        raise _error(file, f'metadata "global_step" is not an integer: '
                           f"{meta['global_step'][:40]!r}") from None
    if batch_size is None:
        batch_size = _run_batch_size(file, meta)
    model = MLP(sizes[1:-1], batch_size, input_size=sizes[0], num_classes=sizes[-1])
    # Parameters the metadata's shape does not explain mean the two disagree; the
    # trainer's own extra tensors live under "data/".
    extra = [n for n in tensors if n not in model.shapes and not n.startswith("data/")]
    if extra:
        raise _error(file, f"tensor {extra[0]!r} is not a parameter of a {sizes} network "
                           "(metadata and tensors disagree)")
    try:
        model.load_state_dict(tensors)
    except ValueError as exc:
        raise _error(file, f"does not fit the {sizes} network in its metadata: {exc}") from None
    model.global_step = global_step
    model.checkpoint_path = Path(file)
    model.metadata = dict(meta)
    return model
