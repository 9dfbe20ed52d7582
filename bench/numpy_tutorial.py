"""The tutorial's whole run (`python -m mnistc.train`) in plain NumPy, as a careful NumPy
user would write it: the peer of bench/test_bench_tutorial.py.

The same work, start to finish: read the four gzip IDX files (header and sizes checked),
hold out the first 5000 training images for validation, initialise the 784-128-32-10
ReLU net as mnistc does (TensorFlow's truncated normal, stddev 1/sqrt(fan_in), zero
biases, from numpy.random.default_rng(seed)), then 2000 steps of plain SGD at 0.01 on
batches of 100 drawn epoch by epoch from fresh permutations of the same generator, a
loss line every 100 steps, and at steps 1000 and 2000 the Training, Validation and Test
evaluations (Precision @ 1) and a checkpoint of the parameters (numpy.savez). float32
throughout; NumPy's BLAS runs on --threads threads.

    python bench/numpy_tutorial.py --data-dir data/mnist --threads 2 --train-dir /tmp/np
"""

import argparse
import os
import sys
import time
from pathlib import Path


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="data/mnist")
    p.add_argument("--train-dir", default="runs/numpy-tutorial")
    p.add_argument("--threads", type=int, default=2, help="BLAS threads (default: 2)")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true", help="print only the evaluations")
    return p.parse_args(argv)


ARGS = parse_args(sys.argv[1:])
# OpenBLAS reads its thread count when it loads, that is when NumPy is imported.
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import gzip  # noqa: E402
import struct  # noqa: E402

import numpy as np  # noqa: E402

HIDDEN, BATCH, LEARNING_RATE, VALIDATION = (128, 32), 100, 0.01, 5000
SCALE = np.float32(1.0 / 255.0)


def read_idx(path, magic):
    """uint8 array of an IDX file, gzip-compressed."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        sys.exit(f"{path}: magic {found}, expected {magic}")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != np.prod(dims):
        sys.exit(f"{path}: {data.size} bytes of data for dimensions {dims}")
    return data.reshape(dims)


def read_pair(data_dir, prefix):
    images = read_idx(Path(data_dir, f"{prefix}-images-idx3-ubyte.gz"), 2051)
    labels = read_idx(Path(data_dir, f"{prefix}-labels-idx1-ubyte.gz"), 2049)
    return images.reshape(len(images), -1), labels


def truncated_normal(rng, shape, stddev):
    values = rng.standard_normal(shape)
    while True:
        outside = np.abs(values) > 2.0
        if not outside.any():
            return (values * stddev).astype(np.float32)
        values[outside] = rng.standard_normal(int(outside.sum()))


class Batches:
    """Batches of row indices, epoch by epoch in fresh permutations (TensorFlow's order)."""

    def __init__(self, n, rng):
        self.n, self.rng, self.order, self.at = n, rng, None, 0

    def next(self, size):
        if self.order is None:
            self.order, self.at = self.rng.permutation(self.n), 0
        taken = self.order[self.at : self.at + size]
        self.at += size
        if self.at < self.n:
            return taken
        self.order, self.at = self.rng.permutation(self.n), size - len(taken)
        return np.concatenate([taken, self.order[: self.at]])


def forward(weights, biases, x):
    hidden = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        hidden = hidden @ w + b
        if i + 1 < len(weights):
            np.maximum(hidden, 0, out=hidden)
    return hidden


def step(weights, biases, x, y):
    """One SGD step on (x, y); returns the batch's mean cross-entropy before it."""
    inputs = [x]
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = inputs[-1] @ w + b
        if i + 1 < len(weights):
            np.maximum(h, 0, out=h)
        inputs.append(h)
    logits = inputs.pop()
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    loss = float(np.mean(np.log(s[:, 0]) - z[rows, y]))
    dz = e / (s * len(y))
    dz[rows, y] -= np.float32(1.0 / len(y))
    for i in range(len(weights) - 1, -1, -1):
        dw, db = inputs[i].T @ dz, dz.sum(axis=0)
        if i > 0:
            dz = (dz @ weights[i].T) * (inputs[i] > 0)
        weights[i] -= np.float32(LEARNING_RATE) * dw
        biases[i] -= np.float32(LEARNING_RATE) * db
    return loss


def evaluate(weights, biases, title, images, labels):
    logits = forward(weights, biases, images * SCALE)
    correct = int((logits.argmax(axis=1) == labels).sum())
    print(f"{title} Data Eval:")
    print(
        f"  Num examples: {len(labels)}  Num correct: {correct}  "
        f"Precision @ 1: {correct / len(labels):0.04f}"
    )


def main():
    train_images, train_labels = read_pair(ARGS.data_dir, "train")
    test_images, test_labels = read_pair(ARGS.data_dir, "t10k")
    splits = [
        ("Training", train_images[VALIDATION:], train_labels[VALIDATION:]),
        ("Validation", train_images[:VALIDATION], train_labels[:VALIDATION]),
        ("Test", test_images, test_labels),
    ]
    images, labels = splits[0][1], splits[0][2]
    rng = np.random.default_rng(ARGS.seed)
    sizes = (images.shape[1],) + HIDDEN + (10,)
    weights = [truncated_normal(rng, (a, b), 1.0 / np.sqrt(a)) for a, b in zip(sizes, sizes[1:])]
    biases = [np.zeros(b, np.float32) for b in sizes[1:]]
    batches = Batches(len(images), rng)
    train_dir = Path(ARGS.train_dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    for n in range(ARGS.max_steps):
        start = time.perf_counter()
        idx = batches.next(BATCH)
        loss = step(weights, biases, images[idx] * SCALE, labels[idx])
        if n % 100 == 0 and not ARGS.quiet:
            print(f"Step {n}: loss = {loss:.2f} ({time.perf_counter() - start:.3f} sec)")
        if (n + 1) % 1000 == 0 or n + 1 == ARGS.max_steps:
            for split in splits:
                evaluate(weights, biases, *split)
            np.savez(
                train_dir / f"checkpoint-{n + 1}.npz",
                **{f"w{i}": w for i, w in enumerate(weights)},
                **{f"b{i}": b for i, b in enumerate(biases)},
            )


if __name__ == "__main__":
    main()
