"""TrainConfig: everything a training run depends on, its defaults and its checks.

The defaults are the tutorial's run. A recipe (mnistc.recipes) is a named set of
overrides; `TrainConfig.from_recipe` applies one under the caller's explicit options.
The first group of fields defines the run: on --resume they must match the checkpoint
(`resume_conflict` says which does not). The others may change between a run and its
resumption.
"""

import math
from dataclasses import asdict, dataclass, fields, replace

from . import datasets
from .optim import NAMES as OPTIMIZERS
from .schedules import KINDS as SCHEDULES
from .schedules import Schedule

SPLITS = ("train", "validation", "test")
DEFAULT_MAX_STEPS = 2000
DEFAULT_CHECKPOINT_EVERY = 1000


@dataclass(frozen=True)
class TrainConfig:
    # -- what the run is (must match on --resume)
    dataset: str = datasets.DEFAULT
    hidden: tuple = (128, 32)
    batch_size: int = 100
    seed: int = 1
    fake_data: bool = False
    validation_size: int = 5000
    optimizer: str = "sgd"
    # The optimizer's hyperparameters; None takes mnistc.optim's default for it.
    momentum: float = None  # momentum, nesterov (0.9)
    weight_decay: float = None  # sgd/momentum/nesterov/adam: L2 (0); adamw: decoupled (0.01)
    beta1: float = None  # adam, adamw (0.9)
    beta2: float = None  # (0.999)
    eps: float = None  # (1e-8)
    label_smoothing: float = 0.0  # the loss's targets: (1 - ε)·onehot + ε/classes
    schedule: str = "constant"
    learning_rate: float = 0.01  # constant rate, or the peak/start of a schedule
    warmup_steps: int = 0
    final_lr: float = 0.0  # linear, cosine
    pct_start: float = 0.3  # one-cycle
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    # -- how long, and when to checkpoint and evaluate
    max_steps: int = None  # default DEFAULT_MAX_STEPS unless epochs is given
    epochs: float = None  # instead of max_steps: ceil(epochs * N / batch_size) steps
    checkpoint_every: int = None  # steps; default DEFAULT_CHECKPOINT_EVERY without epochs
    checkpoint_every_epochs: int = None  # default 1 with epochs; 0: only at the end
    eval_splits: tuple = SPLITS
    # -- where and how (may change on --resume)
    recipe: str = "tutorial"
    threads: int = 0  # 0: $OMP_NUM_THREADS, else every CPU
    isa: str = None  # cap the CPU target (as MNISTC_ISA)
    data_dir: str = None
    train_dir: str = "runs/mnistc"
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    download: bool = True
    tensorboard: bool = True

    @classmethod
    def from_recipe(cls, recipe="tutorial", **options):
        """The recipe's settings with `options` (TrainConfig fields) on top. An explicit
        max_steps drops the recipe's epochs (and their checkpoint period) and the other way
        round; an explicit optimizer drops the recipe's optimizer hyperparameters."""
        from .recipes import get as get_recipe

        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown training option {unknown[0]!r}")
        settings = dict(get_recipe(recipe))
        if options.get("optimizer") is not None:  # another optimizer: the recipe's settings go
            for name in ("momentum", "weight_decay", "beta1", "beta2", "eps"):
                settings.pop(name, None)
        if options.get("max_steps") is not None:
            settings.pop("epochs", None)
            settings.pop("checkpoint_every_epochs", None)
        if options.get("epochs") is not None:
            settings.pop("max_steps", None)
        settings.update(options)
        if "hidden" in settings:
            settings["hidden"] = tuple(settings["hidden"])
        if "eval_splits" in settings:
            settings["eval_splits"] = tuple(settings["eval_splits"])
        return cls(recipe=recipe, **settings)

    # -- derived settings

    def total_steps(self, n_train):
        """The global step the run trains to, given the training split's size."""
        if self.epochs is not None:
            return math.ceil(self.epochs * n_train / self.batch_size)
        return DEFAULT_MAX_STEPS if self.max_steps is None else self.max_steps

    def checkpoint_steps(self, n_train, total):
        """The sorted steps (global step after the update) that checkpoint and evaluate:
        every checkpoint_every steps, or each epoch's end (the step during which the
        e-th pass over the N training examples completes: ceil(e * N / batch_size)),
        and always the last."""
        steps = {total} if total > 0 else set()
        if self.checkpoint_every is not None or self.epochs is None:
            every = self.checkpoint_every or DEFAULT_CHECKPOINT_EVERY
            steps.update(range(every, total, every))
        else:
            every = 1 if self.checkpoint_every_epochs is None else self.checkpoint_every_epochs
            if every > 0:
                e = every
                while math.ceil(e * n_train / self.batch_size) < total:
                    steps.add(math.ceil(e * n_train / self.batch_size))
                    e += every
        return sorted(steps)

    def optimizer_settings(self):
        """The optimizer's full settings as mnistc.optim.Optimizer.settings() gives them (and
        a checkpoint records them): the chosen optimizer's hyperparameters, each given or
        its default. ValueError naming the flag of a value it does not use or refuses."""
        from .optim import HYPERPARAMETERS, Optimizer

        given = {
            name: getattr(self, name)
            for name in ("momentum", "weight_decay", "beta1", "beta2", "eps")
            if getattr(self, name) is not None
        }
        unused = sorted(set(given) - set(HYPERPARAMETERS.get(self.optimizer, given)))
        if unused:
            raise ValueError(
                f"--{unused[0].replace('_', '-')} does not apply to --optimizer {self.optimizer}"
            )
        try:
            return Optimizer(self.optimizer, **given).settings()
        except (ValueError, TypeError) as error:
            raise ValueError(f"--optimizer {self.optimizer}: {error}") from None

    def schedule_for(self, total_steps):
        return Schedule(
            kind=self.schedule,
            learning_rate=self.learning_rate,
            total_steps=0 if self.schedule == "constant" else total_steps,
            warmup_steps=self.warmup_steps,
            final_lr=self.final_lr,
            pct_start=self.pct_start,
            div_factor=self.div_factor,
            final_div_factor=self.final_div_factor,
        )

    def as_dict(self):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def replace(self, **changes):
        return replace(self, **changes)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(config):
    """Reject impossible settings with a ValueError naming the flag at fault."""
    checks = [
        (
            config.dataset in datasets.REGISTRY,
            "--dataset",
            f"must be one of {', '.join(datasets.REGISTRY)}",
            config.dataset,
        ),
        (
            _is_int(config.batch_size) and config.batch_size >= 1,
            "--batch-size",
            "must be >= 1",
            config.batch_size,
        ),
        (
            bool(config.hidden) and all(_is_int(h) and h >= 1 for h in config.hidden),
            "--hidden",
            "must be widths >= 1",
            list(config.hidden),
        ),
        (
            _is_int(config.seed) and 0 <= config.seed < 2**63,
            "--seed",
            "must be in 0..2**63-1",
            config.seed,
        ),
        (
            _is_int(config.validation_size) and config.validation_size >= 0,
            "--validation-size",
            "must be >= 0",
            config.validation_size,
        ),
        (
            config.optimizer in OPTIMIZERS,
            "--optimizer",
            f"must be one of {', '.join(OPTIMIZERS)}",
            config.optimizer,
        ),
        (
            config.schedule in SCHEDULES,
            "--schedule",
            f"must be one of {', '.join(SCHEDULES)}",
            config.schedule,
        ),
        (
            _is_number(config.label_smoothing) and 0 <= config.label_smoothing < 1,
            "--label-smoothing",
            "must be in [0, 1)",
            config.label_smoothing,
        ),
        (
            _is_number(config.learning_rate) and config.learning_rate > 0,
            "--learning-rate",
            "must be a positive number",
            config.learning_rate,
        ),
        (
            _is_int(config.warmup_steps) and config.warmup_steps >= 0,
            "--warmup-steps",
            "must be >= 0",
            config.warmup_steps,
        ),
        (
            _is_number(config.final_lr) and config.final_lr >= 0,
            "--final-lr",
            "must be >= 0",
            config.final_lr,
        ),
        (
            config.max_steps is None or (_is_int(config.max_steps) and config.max_steps >= 0),
            "--max-steps",
            "must be >= 0",
            config.max_steps,
        ),
        (
            config.epochs is None or (_is_number(config.epochs) and config.epochs > 0),
            "--epochs",
            "must be a positive number",
            config.epochs,
        ),
        (
            config.checkpoint_every is None
            or (_is_int(config.checkpoint_every) and config.checkpoint_every >= 1),
            "--checkpoint-every",
            "must be >= 1",
            config.checkpoint_every,
        ),
        (
            config.checkpoint_every_epochs is None
            or (_is_int(config.checkpoint_every_epochs) and config.checkpoint_every_epochs >= 0),
            "--checkpoint-every-epochs",
            "must be >= 0",
            config.checkpoint_every_epochs,
        ),
        (
            bool(config.eval_splits) and set(config.eval_splits) <= set(SPLITS),
            "--eval-splits",
            f"must name some of {', '.join(SPLITS)}",
            ",".join(config.eval_splits),
        ),
        (
            _is_int(config.threads) and config.threads >= 0,
            "--threads",
            "must be >= 1 (or 0: the default)",
            config.threads,
        ),
    ]
    for ok, flag, rule, value in checks:
        if not ok:
            raise ValueError(f"{flag} {rule}, got {value}")
    if config.max_steps is not None and config.epochs is not None:
        raise ValueError("--max-steps and --epochs both give the run's length; pass one")
    if config.checkpoint_every_epochs is not None and config.epochs is None:
        raise ValueError("--checkpoint-every-epochs needs --epochs")
    if config.resume and config.overwrite:
        raise ValueError("--resume and --overwrite contradict each other")
    if config.optimizer in OPTIMIZERS:
        config.optimizer_settings()  # its hyperparameters, checked by mnistc.optim
    if config.isa is not None:
        from . import _kernels

        if config.isa not in _kernels.ISA_NAMES:
            raise ValueError(
                f"--isa must be one of {', '.join(_kernels.ISA_NAMES)}, got {config.isa}"
            )


def resume_conflict(config, saved, schedule):
    """Why `config` cannot resume the run in checkpoint metadata `saved` (a
    CheckpointMeta) with this run's `schedule`, or None when it can."""
    wanted = {
        "dataset": config.dataset,
        "hidden": tuple(config.hidden),
        "batch_size": config.batch_size,
        "seed": config.seed,
        "fake_data": config.fake_data,
        "validation_size": config.validation_size,
        "label_smoothing": config.label_smoothing,
    }
    for name, value in wanted.items():
        if getattr(saved, name) != value:
            return f"was trained with {name}={_show(getattr(saved, name))}, not {_show(value)}"
    if saved.optimizer != config.optimizer_settings():
        return (
            f"was trained with optimizer {_show(saved.optimizer)}, not "
            f"{_show(config.optimizer_settings())}"
        )
    if not schedule.describes_same_run(saved.schedule):
        return (
            f"was trained with schedule {_show(saved.schedule.settings())}, not "
            f"{_show(schedule.settings())} (only a constant rate and the run's length may "
            "change on --resume)"
        )
    return None


def _show(value):
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return repr(value)
