"""What a training checkpoint's metadata holds: one type, its validation, to and from the header.

A checkpoint (mnistc.checkpoint: the safetensors layout, checksummed) carries the model's
tensors and a str->str metadata map. CheckpointMeta is that map's meaning: the global
step, the layer widths, the run's defining settings (data set, split, seed, batch size,
optimizer, schedule), the generator's state and the data position, the last evaluation,
and where it came from (mnistc version, CPU target). Every tool reads a checkpoint through
`load_checkpoint`, which validates every value — type, range, consistency with the
tensors' shapes in the header — before any tensor data is read or any model is built, so
a damaged or inconsistent checkpoint is a CheckpointError (and the manager falls back to
the previous good one) rather than a crash or a huge allocation.

Metadata versions: 1 (mnistc 0.1: plain SGD, MNIST, a constant learning rate) and 2
(this version: adds the data set, optimizer, schedule, epochs and last evaluation). A
version-1 checkpoint reads as a version-2 one with those fields at their 0.1 values.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoint, datasets
from ._version import __version__
from .errors import CheckpointError
from .model import parameter_shapes
from .optim import Optimizer
from .schedules import Schedule

METADATA_VERSION = 2
MAX_LAYERS = 64
MAX_WIDTH = 1 << 24
MAX_BATCH_SIZE = 1 << 20
MAX_STEP = 1 << 62
PERMUTATION_TENSOR = "data/train_permutation"
OPTIMIZER_PREFIX = "optimizer/"
SPLITS = ("train", "validation", "test")

# What a version-1 checkpoint meant by the optimizer it does not name.
_V1_OPTIMIZER = {"name": "sgd", "weight_decay": 0.0}


@dataclass
class CheckpointMeta:
    """The meaning of one checkpoint's metadata (see the module docstring)."""

    global_step: int
    sizes: tuple  # (inputs, hidden..., classes)
    batch_size: int
    seed: int
    fake_data: bool
    validation_size: int
    label_smoothing: float = 0.0
    dataset: str = datasets.DEFAULT
    class_names: tuple = datasets.MNIST.class_names
    optimizer: dict = field(default_factory=lambda: dict(_V1_OPTIMIZER))
    optimizer_step: int = 0
    schedule: Schedule = field(default_factory=Schedule)
    epochs: float = None  # the run's --epochs, or None (it was given --max-steps)
    rng_state: dict = None
    data_state: dict = None
    last_eval: dict = None  # {"step": int, "precision": {split: float}} of the newest evaluation
    mnistc_version: str = __version__
    isa: str = "unknown"
    version: int = METADATA_VERSION

    @property
    def hidden(self):
        return tuple(self.sizes[1:-1])

    def parameter_shapes(self):
        return parameter_shapes(self.sizes)

    def to_header(self):
        """The str->str metadata map this checkpoint is written with."""
        return {
            "metadata_version": str(METADATA_VERSION),
            "global_step": str(self.global_step),
            "sizes": json.dumps(list(self.sizes)),
            "run": json.dumps(
                {
                    "hidden": list(self.hidden),
                    "batch_size": self.batch_size,
                    "seed": self.seed,
                    "fake_data": self.fake_data,
                    "validation_size": self.validation_size,
                    "dataset": self.dataset,
                    "label_smoothing": self.label_smoothing,
                }
            ),
            "class_names": json.dumps(list(self.class_names)),
            "optimizer": json.dumps(self.optimizer),
            "optimizer_step": str(self.optimizer_step),
            "schedule": json.dumps(self.schedule.settings()),
            "learning_rate": repr(self.schedule.learning_rate),
            "epochs": json.dumps(self.epochs),
            "rng_state": json.dumps(self.rng_state),
            "data_state": json.dumps(self.data_state),
            "last_eval": json.dumps(self.last_eval),
            "mnistc_version": self.mnistc_version,
            "isa": self.isa,
        }

    @classmethod
    def from_header(cls, meta, shapes, path):
        """Validate a checkpoint's metadata map against its tensors' `shapes` ({name:
        shape tuple}, from the header); CheckpointError naming the file and the field."""
        return _Reader(meta, path).read(shapes)

    def check_tensors(self, tensors, path):
        """Checks that need the tensor data: parameters finite, the data position's
        permutation an int32 vector."""
        import numpy as np

        for name in self.parameter_shapes():
            if not np.isfinite(tensors[name]).all():
                raise CheckpointError.about(
                    path, f"parameter {name!r} holds NaN or infinite values"
                )
        permutation = tensors.get(PERMUTATION_TENSOR)
        if permutation is not None and permutation.dtype != np.int32:
            raise CheckpointError.about(
                path, f"{PERMUTATION_TENSOR} has dtype {permutation.dtype}, not int32"
            )


class _Reader:
    """Parses and checks one metadata map, field by field, naming the field at fault."""

    def __init__(self, meta, path):
        self.meta = meta
        self.path = path

    def fail(self, reason):
        raise CheckpointError.about(self.path, reason)

    def text(self, key, default=None):
        if key not in self.meta:
            if default is not None:
                return default
            self.fail(f'metadata lacks "{key}"; not written by mnistc.train?')
        return self.meta[key]

    def json(self, key, default=None):
        raw = self.text(key, default)
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            self.fail(f'metadata "{key}" is not JSON: {raw[:40]!r}')

    def count(self, what, value, low=0, high=MAX_STEP):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(
                f"metadata {what} must be a whole number in {low}..{high}, got {str(value)[:40]!r}"
            )
        return value

    def decimal(self, key, default=None):
        raw = self.text(key, default)
        if not (raw.isascii() and raw.isdigit()) or (len(raw) > 1 and raw[0] == "0"):
            self.fail(f'metadata "{key}" must be a whole number, got {raw[:40]!r}')
        return self.count(f'"{key}"', int(raw))

    def read(self, shapes):
        version = self.decimal("metadata_version", "1")
        if version not in (1, METADATA_VERSION):
            self.fail(
                f"metadata_version {version} is not one this mnistc reads (1, {METADATA_VERSION})"
            )
        sizes = self.sizes(shapes)
        self.tensor_shapes(sizes, shapes)
        run = self.json("run")
        if not isinstance(run, dict):
            self.fail('metadata "run" is not a JSON object')
        dataset = run.get("dataset", datasets.DEFAULT)
        if dataset not in datasets.REGISTRY:
            self.fail(f"metadata names an unknown data set {str(dataset)[:40]!r}")
        hidden = run.get("hidden")
        if hidden != list(sizes[1:-1]):
            self.fail(f'metadata "run" has hidden {str(hidden)[:40]} but "sizes" is {list(sizes)}')
        class_names = self.class_names(sizes, dataset, version)
        schedule = self.schedule(version)
        result = CheckpointMeta(
            global_step=self.decimal("global_step"),
            sizes=sizes,
            batch_size=self.count('"run" batch_size', run.get("batch_size"), 1, MAX_BATCH_SIZE),
            seed=self.count('"run" seed', run.get("seed"), 0, 2**63),
            fake_data=self.flag(run.get("fake_data")),
            validation_size=self.count(
                '"run" validation_size', run.get("validation_size"), 0, 2**31
            ),
            label_smoothing=self.smoothing(run.get("label_smoothing", 0.0)),
            dataset=dataset,
            class_names=class_names,
            optimizer=self.optimizer(version),
            optimizer_step=self.decimal("optimizer_step", "0"),
            schedule=schedule,
            epochs=self.epochs(version),
            rng_state=self.rng_state(),
            data_state=self.data_state(),
            last_eval=self.last_eval(version),
            mnistc_version=self.text("mnistc_version", "unknown")[:40],
            isa=self.text("isa", "unknown")[:40],
            version=version,
        )
        return result

    def smoothing(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            self.fail(f'metadata "run" label_smoothing must be in [0, 1), got {str(value)[:40]!r}')
        return float(value)

    def flag(self, value):
        if not isinstance(value, bool):
            self.fail(f'metadata "run" fake_data must be true or false, got {str(value)[:40]!r}')
        return value

    def sizes(self, shapes):
        sizes = self.json("sizes")
        if not isinstance(sizes, list) or not 2 <= len(sizes) <= MAX_LAYERS + 1:
            self.fail(
                f'metadata "sizes" must list 2..{MAX_LAYERS + 1} layer widths, '
                f"got {self.meta['sizes'][:40]!r}"
            )
        for width in sizes:
            self.count('"sizes" entry', width, 1, MAX_WIDTH)
        return tuple(sizes)

    def tensor_shapes(self, sizes, shapes):
        expected = parameter_shapes(sizes)
        for name, shape in expected.items():
            if name not in shapes:
                self.fail(f'tensor {name!r} is missing (the "sizes" {list(sizes)} need it)')
            if tuple(shapes[name]) != shape:
                self.fail(
                    f"tensor {name!r} has shape {list(shapes[name])}, the metadata's "
                    f"{list(sizes)} network needs {list(shape)}"
                )
        for name in shapes:
            if name not in expected and not name.startswith(("data/", OPTIMIZER_PREFIX)):
                self.fail(f"tensor {name[:40]!r} is not a parameter of a {list(sizes)} network")
        permutation = shapes.get(PERMUTATION_TENSOR)
        if permutation is not None and len(permutation) != 1:
            self.fail(f"{PERMUTATION_TENSOR} must be a vector, got shape {list(permutation)}")

    def class_names(self, sizes, dataset, version):
        if version == 1:
            names = list(datasets.get(dataset).class_names)
        else:
            names = self.json("class_names")
        if (
            not isinstance(names, list)
            or len(names) != sizes[-1]
            or not all(isinstance(n, str) and 0 < len(n) <= 100 for n in names)
        ):
            self.fail(f'metadata "class_names" must name each of the {sizes[-1]} classes')
        return tuple(names)

    def optimizer(self, version):
        settings = dict(_V1_OPTIMIZER) if version == 1 else self.json("optimizer")
        if not isinstance(settings, dict) or not isinstance(settings.get("name"), str):
            self.fail('metadata "optimizer" must be a JSON object with a "name"')
        try:
            return Optimizer.from_settings(settings).settings()
        except (ValueError, TypeError) as error:
            self.fail(f'metadata "optimizer": {error}')

    def schedule(self, version):
        if version == 1:
            try:
                rate = float(self.text("learning_rate"))
            except ValueError:
                self.fail(
                    f'metadata "learning_rate" is not a number: {self.meta["learning_rate"][:40]!r}'
                )
            settings = {"learning_rate": rate}
        else:
            settings = self.json("schedule")
        try:
            return Schedule.from_settings(settings)
        except (ValueError, TypeError) as error:
            self.fail(f'metadata "schedule": {error}')

    def epochs(self, version):
        epochs = None if version == 1 else self.json("epochs")
        if epochs is not None and (
            isinstance(epochs, bool)
            or not isinstance(epochs, (int, float))
            or not (math.isfinite(epochs) and epochs > 0)
        ):
            self.fail(
                f'metadata "epochs" must be null or a positive number, got {str(epochs)[:40]!r}'
            )
        return epochs

    def rng_state(self):
        state = self.json("rng_state")
        if state is None:
            return None
        inner = state.get("state") if isinstance(state, dict) else None
        if not (
            isinstance(inner, dict)
            and state.get("bit_generator") == "PCG64"
            and all(
                isinstance(inner.get(k), int)
                and not isinstance(inner.get(k), bool)
                and 0 <= inner.get(k) < 2**128
                for k in ("state", "inc")
            )
            and isinstance(state.get("has_uint32"), int)
            and isinstance(state.get("uinteger"), int)
        ):
            self.fail('metadata "rng_state" is not a PCG64 generator state')
        return state

    def data_state(self):
        state = self.json("data_state")
        if state is None:
            return None
        if not isinstance(state, dict) or set(state) != {"epochs_completed", "index_in_epoch"}:
            self.fail('metadata "data_state" must hold epochs_completed and index_in_epoch')
        for key in state:
            self.count(f'"data_state" {key}', state[key], 0, 2**40)
        return state

    def last_eval(self, version):
        record = None if version == 1 else self.json("last_eval")
        if record is None:
            return None
        precision = record.get("precision") if isinstance(record, dict) else None
        if not (
            isinstance(precision, dict)
            and set(precision) <= set(SPLITS)
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
                for v in precision.values()
            )
        ):
            self.fail('metadata "last_eval" must map splits to precisions in [0, 1]')
        self.count('"last_eval" step', record.get("step"))
        return record


def load_checkpoint(path):
    """(tensors, CheckpointMeta) of a training checkpoint, everything checked: the header
    and its metadata first (no tensor data is read for a checkpoint that fails), then the
    checksum, then the tensors' values; a file named checkpoint-STEP.safetensors must hold
    that global step. CheckpointError naming the file otherwise. The `load` of
    CheckpointManager.restore_latest."""
    meta, shapes = checkpoint.read_header(path)
    result = CheckpointMeta.from_header(meta, shapes, path)
    named_step = checkpoint.CheckpointManager(Path(path).parent).step_of(path)
    if named_step is not None and named_step != result.global_step:
        raise CheckpointError.about(
            path, f"holds global_step {result.global_step}, not the step {named_step} its name says"
        )
    tensors, _ = checkpoint.load_file(path)
    result.check_tensors(tensors, path)
    return tensors, result


def restore_latest(directory, on_fallback=checkpoint.warn_fallback):
    """(tensors, CheckpointMeta) of the newest good checkpoint in a train directory,
    falling back past bad ones (each reported to `on_fallback`); None if it has none."""
    found = checkpoint.CheckpointManager(directory).restore_latest(
        on_fallback, load=load_checkpoint
    )
    return None if found is None else found[1:]
