"""The training run: fully_connected_feed.py's run_training on mnistc's kernels.

The tutorial's loop — a batch, one step, a loss line every 100 steps, a checkpoint and the
three `... Data Eval:` blocks every 1000 steps and at the end — with what it lacked: any
optimizer and learning-rate schedule (the tutorial's plain SGD at 0.01 by default), runs
measured in epochs, exact resume (parameters, optimizer state, step, generator and data
position are all in the checkpoint), one writer per train dir, a stop on a NaN or infinite
loss, a JSON-lines log and a summary.json. The step itself is one C call.
"""

import math
import sys
import time
from pathlib import Path

import numpy as np

from . import _kernels, data, datasets, runtime
from . import config as config_module
from ._version import __version__
from .checkpoint import CheckpointManager, warn_fallback
from .config import TrainConfig
from .errors import CheckpointError, MnistcError, TrainingError
from .lock import TrainDirLock
from .metadata import PERMUTATION_TENSOR, CheckpointMeta, load_checkpoint
from .model import MLP
from .optim import Optimizer
from .recipes import describe
from .runlog import RunOutput, remove_logs, write_summary

LOG_EVERY = 100
EVAL_TITLES = {"train": "Training", "validation": "Validation", "test": "Test"}


def train(recipe="tutorial", **options):
    """The Python API of `python -m mnistc.train`: run_training(TrainConfig.from_recipe(
    recipe, **options)), quiet unless told otherwise; returns the summary dict."""
    options.setdefault("quiet", True)
    return run_training(TrainConfig.from_recipe(recipe, **options))


def _prepare_dir(train_dir):
    try:
        train_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MnistcError(
            f"cannot create train dir {train_dir}: {error.strerror or error}"
        ) from None
    if not train_dir.is_dir():
        raise MnistcError(f"train dir {train_dir} is not a directory")
    import os

    if not os.access(train_dir, os.W_OK):
        raise MnistcError(f"train dir {train_dir} is not writable")


def _restore(manager, cfg, schedule, model, rng, dataset):
    """Load the newest good checkpoint into model, rng and dataset; returns (path, meta)."""
    found = manager.restore_latest(on_fallback=warn_fallback, load=load_checkpoint)
    if found is None:
        raise CheckpointError(f"--resume: no checkpoint in {manager.directory}")
    step, tensors, meta = found
    path = manager.path_for(step)
    if list(meta.sizes) != list(model.sizes):
        raise CheckpointError(
            f"{path}: model shape {list(meta.sizes)} differs from the requested {list(model.sizes)}"
        )
    conflict = config_module.resume_conflict(cfg, meta, schedule)
    if conflict:
        raise CheckpointError(f"{path}: {conflict}; resume with the same settings")
    if meta.rng_state is None or meta.data_state is None:
        raise CheckpointError(f"{path}: holds no generator or data position; it cannot be resumed")
    if (meta.isa == "generic") != (_kernels.isa_active() == "generic") and meta.isa != "unknown":
        print(
            f"warning: {path} was trained on the {meta.isa} CPU target and this run uses "
            f"{_kernels.isa_active()}: the result may differ in the last bits from an "
            "uninterrupted run",
            file=sys.stderr,
            flush=True,
        )
    try:
        model.load_state_dict(tensors)
        model.load_optimizer_state(tensors, meta.optimizer_step)
        rng.bit_generator.state = meta.rng_state
        dataset.set_state(meta.data_state, tensors.get(PERMUTATION_TENSOR, np.empty(0, np.int32)))
    except (ValueError, TypeError, KeyError, MnistcError) as exc:
        raise CheckpointError(f"{path}: cannot restore: {exc}") from None
    model.global_step = meta.global_step
    return path, meta


def _evaluate(model, sets, splits, n_threads, out, step):
    precision = {}
    for split in splits:
        dataset = getattr(sets, split)
        out.say(f"{EVAL_TITLES[split]} Data Eval:")
        correct = model.evaluation(dataset.images, dataset.labels, 1, None, n_threads)
        n = dataset.num_examples
        precision[split] = correct / n if n else 0.0
        out.say(
            f"  Num examples: {n}  Num correct: {correct}  Precision @ 1: {precision[split]:0.04f}"
        )
        out.scalar(step, f"precision/{split}", precision[split])
    return precision


def run_training(cfg):
    """Train as configured; returns the run's summary (also written to summary.json)."""
    config_module.validate(cfg)
    runtime.check_environment()
    if cfg.isa is not None:
        _kernels.set_isa(cfg.isa)
    train_dir = Path(cfg.train_dir)
    _prepare_dir(train_dir)
    with TrainDirLock(train_dir):
        return _run_locked(cfg, train_dir)


def _run_locked(cfg, train_dir):
    manager = CheckpointManager(train_dir)
    if manager.list(files_only=False) and not cfg.resume and not cfg.overwrite:
        raise MnistcError(
            f"{train_dir} already holds checkpoints (newest: step "
            f"{manager.list(files_only=False)[-1][0]}); pass --resume to continue that run or "
            "--overwrite to start over"
        )
    spec = datasets.get(cfg.dataset)
    rng = np.random.default_rng(cfg.seed)
    from .download import stderr_progress

    sets = data.read_data_sets(
        cfg.data_dir,
        fake_data=cfg.fake_data,
        validation_size=cfg.validation_size,
        rng=rng,
        download=cfg.download,
        dataset=cfg.dataset,
        progress=None if cfg.quiet else stderr_progress(),
    )
    n_train = sets.train.num_examples
    if n_train == 0:
        raise ValueError(f"--validation-size {cfg.validation_size} leaves no training examples")
    if cfg.batch_size > n_train:
        raise ValueError(f"--batch-size {cfg.batch_size} exceeds the {n_train} training examples")
    total = cfg.total_steps(n_train)
    schedule = cfg.schedule_for(total)
    n_threads = runtime.resolve_threads(cfg.threads)
    model = _build_model(cfg, spec)
    model.initialize(rng)  # weights first, then the data order, from one generator
    if cfg.overwrite:  # only now that the new run is sure to start
        manager.remove_all()
        remove_logs(train_dir)

    restored = meta = None
    if cfg.resume:
        restored, meta = _restore(manager, cfg, schedule, model, rng, sets.train)
    start = model.global_step
    out = RunOutput(train_dir, cfg.quiet, start, cfg.tensorboard)
    try:
        if cfg.recipe != "tutorial":
            out.say(describe(cfg.recipe, cfg))
        if restored is not None:
            out.say(f"Resuming from {restored} (step {start})")
        loop_seconds, precision = _loop(
            cfg, model, sets, schedule, total, n_threads, out, manager, spec, rng
        )
    finally:
        out.close()

    steps_run = max(total - start, 0)
    if steps_run == 0 and meta is not None:
        precision = dict(meta.last_eval["precision"]) if meta.last_eval else {}
    summary = {
        "steps": steps_run,
        "global_step": model.global_step,
        "threads": n_threads,
        "batch_size": cfg.batch_size,
        "train_loop_seconds": loop_seconds,
        "steps_per_second": steps_run / loop_seconds if loop_seconds > 0 else None,
        "precision": precision,
        "dataset": cfg.dataset,
        "recipe": cfg.recipe,
        "optimizer": cfg.optimizer_settings(),
        "schedule": schedule.settings(),
        "epochs": cfg.epochs,
        "isa": _kernels.isa_active(),
        "mnistc_version": __version__,
        "config": cfg.as_dict(),
    }
    if steps_run > 0 or not (train_dir / "summary.json").exists():
        write_summary(train_dir, summary)
    return summary


def _build_model(cfg, spec):
    optimizer = Optimizer.from_settings(cfg.optimizer_settings())
    return MLP(
        cfg.hidden,
        cfg.batch_size,
        input_size=spec.image_pixels,
        num_classes=spec.num_classes,
        optimizer=optimizer,
        label_smoothing=cfg.label_smoothing,
    )


def _loop(cfg, model, sets, schedule, total, n_threads, out, manager, spec, rng):
    n_train = sets.train.num_examples
    checkpoints = set(cfg.checkpoint_steps(n_train, total))
    constant = schedule.kind == "constant" and schedule.warmup_steps == 0
    images, labels = sets.train.images, sets.train.labels
    loop_seconds = 0.0
    precision = {}
    last_saved = model.global_step if cfg.resume else None  # the checkpoint restored
    for step in range(model.global_step, total):
        lr = schedule.rate(step)
        t0 = time.perf_counter()
        idx = sets.train.next_batch_indices(cfg.batch_size)
        loss = model.train_step(images, labels, idx, lr, n_threads)
        duration = time.perf_counter() - t0
        loop_seconds += duration
        if not math.isfinite(loss):
            kept = (
                f"the last good checkpoint is step {last_saved}"
                if last_saved is not None
                else "no checkpoint was written"
            )
            raise TrainingError(
                f"loss became {loss} at step {step}; training stopped "
                f"({kept}). Try a smaller --learning-rate"
            )
        if step % LOG_EVERY == 0:
            rate = "" if constant else f", lr = {lr:.4g}"
            out.say(f"Step {step}: loss = {loss:.2f}{rate} ({duration:.3f} sec)")
            out.scalar(step, "loss", loss)
            out.scalar(step, "learning_rate", lr)
        if model.global_step in checkpoints:
            if cfg.epochs is not None:
                epoch = model.global_step * cfg.batch_size / n_train
                out.say(
                    f"Epoch {min(epoch, cfg.epochs):.4g} of {cfg.epochs:g} "
                    f"(step {model.global_step})"
                )
            precision = _evaluate(model, sets, cfg.eval_splits, n_threads, out, step)
            _save(manager, cfg, model, schedule, spec, rng, sets.train, precision)
            last_saved = model.global_step
    return loop_seconds, precision


def _save(manager, cfg, model, schedule, spec, rng, dataset, precision):
    tensors = model.state_dict()
    optimizer_tensors, optimizer_step = model.optimizer_state()
    tensors.update(optimizer_tensors)
    tensors[PERMUTATION_TENSOR] = dataset.permutation
    meta = CheckpointMeta(
        global_step=model.global_step,
        sizes=tuple(model.sizes),
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        fake_data=cfg.fake_data,
        validation_size=cfg.validation_size,
        label_smoothing=cfg.label_smoothing,
        dataset=cfg.dataset,
        class_names=spec.class_names,
        optimizer=cfg.optimizer_settings(),
        optimizer_step=optimizer_step,
        schedule=schedule,
        epochs=cfg.epochs,
        rng_state=rng.bit_generator.state,
        data_state=dataset.get_state(),
        last_eval={"step": model.global_step, "precision": precision},
        isa=_kernels.isa_active(),
    )
    manager.save(model.global_step, tensors, meta.to_header())
