"""The tutorial's input pipeline: a data set's three splits, served in shuffled batches.

`read_data_sets` is TensorFlow's `input_data.read_data_sets`: it finds (and, if allowed,
downloads) a registered data set's four IDX files, checks them, holds out the first
`validation_size` training examples as the validation split, and returns three DataSets.
A DataSet is the resumable shuffled batch stream of TensorFlow >= 1.1
(contrib/learn/datasets/mnist.py). Images stay uint8 and are scaled per batch; no float
copy of a whole split is ever made. This module prints nothing.
"""

import operator
from typing import NamedTuple

import numpy as np

from . import datasets, idx
from .errors import DataError
from .model import PIXEL_SCALE


def _is_integer(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class DataSet:
    """uint8 images [N, pixels] and uint8 labels [N], served in shuffled batches.

    Shuffling follows TensorFlow >= 1.1: each epoch, the first included, visits
    the examples in a fresh order drawn with `rng.permutation(N)`. The first
    permutation is drawn lazily by the first batch, so creating a DataSet uses
    no randomness; each later one is drawn as soon as the previous epoch is used
    up. A batch that straddles the end of an epoch is the tail of the old order
    followed by the head of the new one: no example is skipped.

    The position is (epochs_completed, index_in_epoch, permutation); see
    get_state/set_state. Before the first batch the permutation is empty.
    """

    def __init__(self, images, labels, rng=None):
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2:
            raise TypeError("images must be a uint8 numpy array [N, pixels]")
        if not images.flags.c_contiguous:
            raise ValueError("images must be C-contiguous")
        if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8 or labels.ndim != 1:
            raise TypeError("labels must be a uint8 numpy array [N]")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self._images = images
        self._labels = labels
        self._rng = np.random.default_rng() if rng is None else rng
        self._epochs_completed = 0
        self._index_in_epoch = 0
        self._permutation = np.empty(0, dtype=np.int32)

    @property
    def images(self):
        return self._images

    @property
    def labels(self):
        return self._labels

    @property
    def num_examples(self):
        return self._images.shape[0]

    @property
    def epochs_completed(self):
        return self._epochs_completed

    @property
    def permutation(self):
        """This epoch's order, int32 [N] (read-only view); empty before the first batch."""
        view = self._permutation.view()
        view.flags.writeable = False
        return view

    def _start_epoch(self):
        self._permutation = self._rng.permutation(self.num_examples).astype(np.int32)
        self._index_in_epoch = 0

    def next_batch_indices(self, batch_size):
        """Row indices of the next `batch_size` examples: a new int32 array the
        caller owns. Requires 1 <= batch_size <= num_examples (else ValueError)."""
        batch_size = operator.index(batch_size)
        if not 1 <= batch_size <= self.num_examples:
            raise ValueError(
                f"batch_size must be in 1..num_examples={self.num_examples}, got {batch_size}"
            )
        if self._permutation.size == 0:
            self._start_epoch()
        start = self._index_in_epoch
        taken = min(batch_size, self.num_examples - start)
        first = self._permutation[start : start + taken].copy()
        self._index_in_epoch += taken
        if self._index_in_epoch < self.num_examples:
            return first
        self._epochs_completed += 1
        self._start_epoch()
        self._index_in_epoch = batch_size - taken
        return np.concatenate([first, self._permutation[: batch_size - taken]])

    def next_batch(self, batch_size):
        """(images float32 [B, pixels] in [0, 1], labels int32 [B]) for the next batch.

        Pixels are scaled as the model's own input is (mnistc.model.PIXEL_SCALE: uint8 *
        float32(1/255), TensorFlow's multiply by the rounded reciprocal).
        """
        indices = self.next_batch_indices(batch_size)
        images = self._images[indices].astype(np.float32)
        images *= np.float32(PIXEL_SCALE)
        return images, self._labels[indices].astype(np.int32)

    def get_state(self):
        """{"epochs_completed": int, "index_in_epoch": int}: with `permutation` and
        the rng's state, everything needed to resume the batch stream exactly."""
        return {"epochs_completed": self._epochs_completed, "index_in_epoch": self._index_in_epoch}

    def set_state(self, state, permutation):
        """Restore a position saved by get_state() and `permutation` (the rng's state
        is restored separately). DataError if they do not fit this data set."""
        try:
            epochs, index = state["epochs_completed"], state["index_in_epoch"]
        except (KeyError, TypeError) as error:
            raise DataError(
                f"data position {state!r} lacks epochs_completed/index_in_epoch"
            ) from error
        if not all(_is_integer(value) for value in (epochs, index)):
            raise DataError(f"data position {state!r} must hold integers")
        permutation = np.asarray(permutation)
        if permutation.ndim != 1 or (
            permutation.size and not np.issubdtype(permutation.dtype, np.integer)
        ):
            shape = f"{permutation.dtype} {permutation.shape}"
            raise DataError(f"data permutation must be a 1-D integer array, got {shape}")
        if permutation.size == 0:
            if (epochs, index) != (0, 0):
                raise DataError(f"data position {state!r} has no permutation but is past the start")
        else:
            n = self.num_examples
            if permutation.size != n:
                raise DataError(
                    f"data permutation has {permutation.size} entries, the data set {n} examples"
                )
            if not np.array_equal(np.sort(permutation), np.arange(n)):
                raise DataError("data permutation is not a permutation of 0..N-1")
            if epochs < 0 or not 0 <= index < n:
                raise DataError(f"data position {state!r} is out of range for {n} examples")
        self._epochs_completed = int(epochs)
        self._index_in_epoch = int(index)
        self._permutation = permutation.astype(np.int32)


class Datasets(NamedTuple):
    train: DataSet
    validation: DataSet
    test: DataSet


def _fake_data_sets(spec, rng):
    """The tutorial's fake data: 10000 all-255 images (1.0 once scaled), label 0."""
    images = np.full((10000, spec.image_pixels), 255, dtype=np.uint8)
    labels = np.zeros(10000, dtype=np.uint8)
    return Datasets(*(DataSet(images, labels, rng) for _ in range(3)))


def _read_pair(spec, images_path, labels_path):
    images = idx.read_images(images_path, spec.image_shape)
    labels = idx.read_labels(labels_path, spec.num_classes)
    if images.shape[0] != labels.shape[0]:
        counts = f"{images.shape[0]} images but {labels_path} has {labels.shape[0]} labels"
        raise DataError(f"{images_path} has {counts}")
    return images.reshape(images.shape[0], spec.image_pixels), labels


def read_data_sets(
    data_dir=None,
    fake_data=False,
    validation_size=5000,
    rng=None,
    download=True,
    dataset=datasets.DEFAULT,
    progress=None,
):
    """Datasets(train, validation, test) of a registered data set (mnistc.datasets), images
    uint8 [N, pixels], labels uint8 [N].

    The folder comes from datasets.resolve_data_dir(spec, data_dir); each file may be raw
    or .gz (raw preferred). Missing files are downloaded if `download` and the folder may
    be written (`progress`: see mnistc.download), else DataError. The first
    `validation_size` training examples, in file order, are the validation split
    (ValueError naming --validation-size unless 0 <= validation_size <= N). The three
    DataSets share `rng` (default np.random.default_rng()). `fake_data` reads nothing.
    """
    spec = datasets.get(dataset)
    validation_size = operator.index(validation_size)
    rng = np.random.default_rng() if rng is None else rng
    if fake_data:
        return _fake_data_sets(spec, rng)
    data_dir, may_download = datasets.resolve_data_dir(spec, data_dir)
    missing = datasets.missing_files(spec, data_dir)
    if missing and download and may_download:
        from .download import download_missing

        download_missing(spec, data_dir, progress=progress)
        missing = datasets.missing_files(spec, data_dir)
    if missing:
        why = (
            "downloading is off"
            if not download
            else "this folder is only read, never downloaded into"
        )
        raise DataError(
            f"{data_dir}: missing {spec.title} files {', '.join(missing)} (raw or .gz) and {why}; "
            f"put the files there or pass --data-dir DIR"
        )
    paths = {key: datasets.local_file(data_dir, name) for key, name in spec.files.items()}
    # zlib lets go of the GIL while it inflates: the test pair is read on a second thread
    # while this one reads the (six times larger) training pair. (Imported here: 5 ms
    # that `import mnistc` for inference need not pay.)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        test_pair = pool.submit(_read_pair, spec, paths["test_images"], paths["test_labels"])
        train_images, train_labels = _read_pair(spec, paths["train_images"], paths["train_labels"])
        test_images, test_labels = test_pair.result()
    n_train = train_images.shape[0]
    if not 0 <= validation_size <= n_train:
        raise ValueError(
            f"--validation-size must be in 0..{n_train} (the {spec.title} training "
            f"set's size), got {validation_size}"
        )
    return Datasets(
        train=DataSet(train_images[validation_size:], train_labels[validation_size:], rng),
        validation=DataSet(train_images[:validation_size], train_labels[:validation_size], rng),
        test=DataSet(test_images, test_labels, rng),
    )
