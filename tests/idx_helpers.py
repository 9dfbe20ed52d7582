# tests/idx_helpers.py: builds IDX bytes and small MNIST-like folders for the data tests.
#
# It is deliberately independent of mnistc.data: headers are packed here with struct,
# so a bug in write_idx cannot hide the same bug in read_idx. It is not a test module.
import gzip
import hashlib
import struct

import numpy as np

UBYTE = 0x08
MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(dims, payload, dtype_code=UBYTE, prefix=b"\0\0"):
    """An IDX file: `prefix` (two zero bytes when valid), type code, ndim, dims, payload."""
    return prefix + struct.pack(f">BB{len(dims)}I", dtype_code, len(dims), *dims) + payload


def images_idx(images):
    """IDX bytes of uint8 images [N, rows, cols] (magic 2051)."""
    return idx_bytes(images.shape, images.astype(np.uint8).tobytes())


def labels_idx(labels):
    """IDX bytes of uint8 labels [N] (magic 2049)."""
    return idx_bytes(labels.shape, labels.astype(np.uint8).tobytes())


def write_bytes(path, data, gz=False):
    """Write `data` to `path`, gzip-compressed if `gz` (the name is not changed)."""
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def fake_mnist(n_train=12, n_test=5, seed=0):
    """{name: decompressed IDX bytes} of a tiny MNIST-shaped data set (28x28 images)."""
    rng = np.random.default_rng(seed)
    return {
        MNIST_NAMES["train_images"]: images_idx(
            rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
        ),
        MNIST_NAMES["train_labels"]: labels_idx(np.arange(n_train) % 10),
        MNIST_NAMES["test_images"]: images_idx(
            rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
        ),
        MNIST_NAMES["test_labels"]: labels_idx((np.arange(n_test) + 3) % 10),
    }


def write_mnist_dir(directory, files, gz=True):
    """Write {name: bytes} into `directory` as `<name>.gz` (or raw `<name>`)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_bytes(directory / (f"{name}.gz" if gz else name), data, gz)
    return directory


def sha256_table(files):
    """{name: hex SHA-256 of the decompressed bytes}, the shape of mnistc.data.SHA256."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def learnable_images(labels, seed=0, noise=60):
    """uint8 images [N, 28, 28] for `labels`: class c is its own fixed random pattern (a
    quarter of the pixels bright, the same pattern for every example of c, different for
    each class), under uniform noise in 0..noise on every pixel. A working trainer tells
    the ten classes apart within a few hundred steps; a net that only learns the labels'
    frequencies, or a broken update, stays near 10%."""
    patterns = np.random.default_rng(1000).random((10, 28, 28)) < 0.25
    rng = np.random.default_rng(seed)
    bright = patterns[np.asarray(labels)] * (255 - noise)
    return (bright + rng.integers(0, noise + 1, bright.shape)).astype(np.uint8)


def learnable_mnist(n_train=1100, n_test=300, seed=0):
    """{name: decompressed IDX bytes} of an MNIST-shaped data set with a distinct learnable
    pattern per class (learnable_images), every class equally often in each split, in
    shuffled order."""
    rng = np.random.default_rng(seed)
    train_labels = rng.permutation(np.arange(n_train) % 10).astype(np.uint8)
    test_labels = rng.permutation(np.arange(n_test) % 10).astype(np.uint8)
    return {
        MNIST_NAMES["train_images"]: images_idx(learnable_images(train_labels, seed + 1)),
        MNIST_NAMES["train_labels"]: labels_idx(train_labels),
        MNIST_NAMES["test_images"]: images_idx(learnable_images(test_labels, seed + 2)),
        MNIST_NAMES["test_labels"]: labels_idx(test_labels),
    }
