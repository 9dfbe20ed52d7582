"""Load a trained model for inference: ``mnistc.load("runs/mnistc")`` -> an MLP.

`load(path, step=None)` finds a checkpoint (the newest good one of a train dir, a given
step, or a named file), checks it through mnistc.metadata (every field validated before
any model is built), rebuilds the network from the widths it records and loads the
parameters. Unlike the trainer's own restore it needs no generator, data position or
optimizer state. Every problem is a CheckpointError naming the file.
"""

from pathlib import Path

from .checkpoint import CheckpointManager, warn_fallback
from .errors import CheckpointError
from .metadata import load_checkpoint, restore_latest
from .model import MLP, ModelTooLarge

# Evaluation runs in chunks of this many rows at most: a row's logits are the same bits
# whatever the chunk (mnistc.h's rounding rules), so this only bounds the scratch memory.
MAX_EVAL_BATCH = 1024


def _error(path, reason):
    return CheckpointError.about(Path(path), reason)


def find_checkpoint(path, step=None, on_fallback=warn_fallback):
    """(checkpoint file, tensors, CheckpointMeta) for `path` (a train dir or a file) and
    `step` (with a directory: that step's checkpoint instead of the newest good one)."""
    path = Path(path)
    if path.is_dir():
        manager = CheckpointManager(path)
        if step is None:
            found = restore_latest(path, on_fallback=on_fallback)
            if found is None:
                raise _error(
                    path,
                    "no checkpoint in this directory (nothing named "
                    "checkpoint-STEP.safetensors); train first or name a file",
                )
            tensors, meta = found
            return manager.path_for(meta.global_step), tensors, meta
        file = manager.path_for(step)
        if not file.is_file():
            steps = [s for s, _ in manager.list()]
            have = f"it has steps {', '.join(map(str, steps))}" if steps else "it has none"
            raise _error(file, f"no checkpoint for step {step} in {path} ({have})")
        return (file, *load_checkpoint(file))
    if step is not None:
        raise ValueError(f"step={step} applies to a train directory, but {path} is a file")
    if not path.exists():
        raise _error(path, "no such checkpoint file or train directory")
    return (path, *load_checkpoint(path))


def load(path, step=None, *, batch_size=None, on_fallback=warn_fallback):
    """Rebuild the MLP saved in a checkpoint and return it, ready for inference.

    path: a train directory (its newest readable checkpoint; unreadable newer ones are
    skipped with a warning on stderr via `on_fallback(path, error)`), or a checkpoint
    file. step: with a directory, load checkpoint-STEP instead of the newest.
    batch_size: the chunk size of evaluation passes (default: the training run's batch,
    at most MAX_EVAL_BATCH).

    The model gets three attributes besides its parameters and `global_step`:
    `checkpoint_path` (the file loaded), `meta` (its mnistc.metadata.CheckpointMeta: data
    set, class names, run settings) and `class_names`.
    """
    file, tensors, meta = find_checkpoint(path, step, on_fallback)
    if batch_size is None:
        batch_size = min(meta.batch_size, MAX_EVAL_BATCH)
    try:
        model = MLP(meta.hidden, batch_size, input_size=meta.sizes[0], num_classes=meta.sizes[-1])
    except ModelTooLarge as exc:
        raise _error(file, exc.problem) from None
    try:
        model.load_state_dict(tensors)
    except ValueError as exc:
        raise _error(
            file, f"does not fit the {list(meta.sizes)} network in its metadata: {exc}"
        ) from None
    model.global_step = meta.global_step
    model.checkpoint_path = Path(file)
    model.meta = meta
    model.class_names = meta.class_names
    return model
