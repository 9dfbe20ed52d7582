# mnistc/data.py: the MNIST data layer.
#
# It is: an IDX reader and writer (raw or gzip, bounded memory on hostile input),
# the MNIST-specific checks, locating and downloading the four files (mirrors,
# SHA-256 of the decompressed bytes, atomic writes), and DataSet, the resumable
# shuffled batch stream of TensorFlow >= 1.1 (contrib/learn/datasets/mnist.py).
#
# It is not: the model, the trainer or the CLI. It prints nothing and never keeps
# a float copy of a whole data set: images stay uint8 and are scaled per batch.
"""Read, write, locate and download MNIST, and serve it in shuffled batches.

Every problem with a file raises :class:`mnistc.errors.DataError` (downloads:
:class:`mnistc.errors.DownloadError`) with a one-line message that names the
file and the fault. Argument mistakes raise ValueError/TypeError.
"""

import contextlib
import gzip
import hashlib
import math
import operator
import os
import pathlib
import struct
import tempfile
import zlib
from typing import NamedTuple

import numpy as np

from mnistc.errors import DataError, DownloadError

IMAGE_PIXELS = 784
NUM_CLASSES = 10
IMAGE_ROWS = IMAGE_COLS = 28

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# SHA-256 of the *decompressed* files: recompressed copies still verify.
SHA256 = {
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

IMAGES_MAGIC = 2051  # 0x00000803: ubyte, 3 dims
LABELS_MAGIC = 2049  # 0x00000801: ubyte, 1 dim
MAX_IDX_BYTES = 2**31  # refuse larger bodies before allocating anything
MAX_IDX_NDIM = 4
MAX_DOWNLOAD_BYTES = 64 << 20  # the largest MNIST .gz is ~10 MB
CHUNK_BYTES = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"

# IDX type codes; the data on disk is big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(np.int16),
    0x0C: np.dtype(np.int32),
    0x0D: np.dtype(np.float32),
    0x0E: np.dtype(np.float64),
}
_IDX_CODES = {dtype: code for code, dtype in _IDX_DTYPES.items()}

# What a corrupt gzip stream can raise (gzip.BadGzipFile is an OSError).
_GZIP_ERRORS = (OSError, EOFError, zlib.error)


class _IdxFault(Exception):
    """A structural fault in an IDX stream; turned into DataError with the path."""


# ---------------------------------------------------------------- files


@contextlib.contextmanager
def _atomic_output(path):
    """Yield a binary temp file next to `path`; on success fsync it and rename it
    over `path`, on any exception delete it (so readers never see half a file)."""
    path = pathlib.Path(path)
    tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with tmp:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise


@contextlib.contextmanager
def _open_decompressed(path):
    """Open `path` for binary reading, through gzip if it starts with 1f 8b.
    Yields (stream, is_gzip, raw_size)."""
    with open(path, "rb") as file:
        is_gzip = file.read(2) == GZIP_MAGIC
        file.seek(0)
        if is_gzip:
            with gzip.GzipFile(fileobj=file) as stream:
                yield stream, True, None
        else:
            yield file, False, os.fstat(file.fileno()).st_size


def _read_up_to(stream, count):
    """Read `count` bytes, fewer only at end of stream, into a uint8 array. Memory grows
    with the bytes actually read, never with `count` (which may come from a hostile
    header): the buffer starts at one chunk and grows fourfold as it fills.

    The buffer is NumPy's own allocation, which on Linux asks for transparent huge pages
    from 4 MiB up: the training step gathers 100 random rows of 784 bytes from the
    images, and with 4 KiB pages each row costs a TLB miss (the gather, timed inside
    the step: 32-44 us per step from a bytearray, 24-30 us from huge pages)."""
    buf = np.empty(min(count, CHUNK_BYTES), np.uint8)
    filled = 0
    while filled < count:
        if filled == buf.size:
            grown = np.empty(min(count, 4 * buf.size), np.uint8)
            grown[:filled] = buf
            buf = grown
        # At most a chunk per call: a gzip stream's readinto reads into a temporary.
        got = stream.readinto(memoryview(buf)[filled:min(buf.size, filled + CHUNK_BYTES)])
        if not got:
            break
        filled += got
    return buf[:filled]


def _sha256_of_decompressed(path):
    """Hex SHA-256 of the file's content, decompressed if it is gzip."""
    digest = hashlib.sha256()
    with _open_decompressed(path) as (stream, _, _):
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- IDX


def _parse_idx(stream, raw_size, expected_magic):
    """Parse one IDX stream; raise _IdxFault on any structural problem."""
    header = _read_up_to(stream, 4)
    if len(header) < 4:
        raise _IdxFault(f"truncated header: expected 4 bytes, found {len(header)}")
    magic = int.from_bytes(header, "big")
    zeros, dtype_code, ndim = struct.unpack(">HBB", header)
    if expected_magic is not None and magic != expected_magic:
        raise _IdxFault(f"wrong magic number {magic} (0x{magic:08x}), expected {expected_magic}")
    if zeros != 0:
        raise _IdxFault(f"wrong magic number 0x{magic:08x}: an IDX file starts with two zero bytes")
    if dtype_code not in _IDX_DTYPES:
        raise _IdxFault(f"unknown IDX data type code 0x{dtype_code:02x}")
    if not 1 <= ndim <= MAX_IDX_NDIM:
        raise _IdxFault(f"unsupported number of dimensions {ndim} (expected 1..{MAX_IDX_NDIM})")

    dims_bytes = _read_up_to(stream, 4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise _IdxFault(f"truncated header: expected {4 + 4 * ndim} bytes, found {4 + len(dims_bytes)}")
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    dtype = _IDX_DTYPES[dtype_code]
    nbytes = math.prod(dims) * dtype.itemsize
    if nbytes > MAX_IDX_BYTES:
        raise _IdxFault(f"dimensions {dims} need {nbytes} bytes of data, more than the limit {MAX_IDX_BYTES}")

    if raw_size is not None:  # check against the file size before reading anything
        found = raw_size - (4 + 4 * ndim)
        if found < nbytes:
            raise _IdxFault(f"truncated data: expected {nbytes} bytes of data, found {found}")
        if found > nbytes:
            raise _IdxFault(f"{found - nbytes} bytes of trailing garbage after the {nbytes} bytes of data")
    body = _read_up_to(stream, nbytes)
    if len(body) < nbytes:
        raise _IdxFault(f"truncated data: expected {nbytes} bytes of data, found {len(body)}")
    if stream.read(1):  # reads at most a buffer's worth: a gzip bomb is not inflated
        raise _IdxFault(f"trailing garbage after the {nbytes} bytes of data")
    big_endian = body.view(dtype.newbyteorder(">"))
    return big_endian.astype(dtype, copy=False).reshape(dims)


def _read_idx(path, expected_magic=None):
    path = pathlib.Path(path)
    is_gzip = False
    try:
        with _open_decompressed(path) as (stream, is_gzip, raw_size):
            return _parse_idx(stream, raw_size, expected_magic)
    except _IdxFault as fault:
        raise DataError(f"{path}: {fault}") from None
    except _GZIP_ERRORS as error:
        problem = "corrupt or truncated gzip data" if is_gzip else "cannot read"
        raise DataError(f"{path}: {problem}: {error}") from error


def read_idx(path):
    """Read any IDX file, raw or gzip (detected by its magic bytes, not its name).

    Returns a native-endian array with the file's dtype and shape (zero-sized
    dimensions are allowed here). Raises DataError on any fault.
    """
    return _read_idx(path)


def write_idx(path, array, compress=None):
    """Write `array` (uint8, int8, int16, int32, float32 or float64; 1 to 4 dims)
    as an IDX file, atomically. compress=None gzips iff `path` ends with ".gz"."""
    path = pathlib.Path(path)
    array = np.asarray(array)
    if array.dtype not in _IDX_CODES:
        raise TypeError(f"IDX cannot store dtype {array.dtype}; use one of {sorted(map(str, _IDX_CODES))}")
    if not 1 <= array.ndim <= MAX_IDX_NDIM:
        raise ValueError(f"IDX arrays must have 1..{MAX_IDX_NDIM} dimensions, got {array.ndim}")
    if max(array.shape) >= 2**32:
        raise ValueError(f"IDX dimensions must fit in 32 bits, got {array.shape}")
    if compress is None:
        compress = path.name.endswith(".gz")
    header = struct.pack(f">HBB{array.ndim}I", 0, _IDX_CODES[array.dtype], array.ndim, *array.shape)
    body = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).reshape(-1).view(np.uint8)
    with _atomic_output(path) as out:
        if compress:  # mtime=0: the same array always gives the same bytes
            with gzip.GzipFile(filename=path.name, fileobj=out, mode="wb", mtime=0) as sink:
                sink.write(header)
                sink.write(body)
        else:
            out.write(header)
            out.write(body)


def _read_mnist_images(path):
    """uint8 [N, rows, cols] from an MNIST images file (magic 2051)."""
    images = _read_idx(path, IMAGES_MAGIC)
    if images.shape[0] == 0:
        raise DataError(f"{path}: contains no items")
    if images.size == 0:
        raise DataError(f"{path}: images have zero size {images.shape[1]}x{images.shape[2]}")
    return images


def read_idx_images(path):
    """uint8 [N, rows*cols] from an MNIST images file (magic 2051, N >= 1)."""
    images = _read_mnist_images(path)
    return images.reshape(images.shape[0], -1)


def read_idx_labels(path, num_classes=NUM_CLASSES):
    """uint8 [N] from an MNIST labels file (magic 2049, N >= 1, every label < num_classes)."""
    labels = _read_idx(path, LABELS_MAGIC)
    if labels.shape[0] == 0:
        raise DataError(f"{path}: contains no items")
    out_of_range = np.flatnonzero(labels >= num_classes)
    if out_of_range.size:
        index = int(out_of_range[0])
        raise DataError(f"{path}: label {labels[index]} at index {index} is outside 0..{num_classes - 1}")
    return labels


# ---------------------------------------------------------------- locating and downloading


def resolve_data_dir(data_dir=None):
    """Where the MNIST files live, and whether missing ones may be downloaded there.

    In order: `data_dir` if given, else $MNISTC_DATA_DIR, else ./data/mnist if it
    exists, else $XDG_CACHE_HOME/mnistc/mnist (default ~/.cache/mnistc/mnist).
    Returns (directory, may_download). A folder the user named (argument or
    environment) and the cache may be filled by download; ./data/mnist, found
    implicitly in the working directory, is never written to.
    """
    if data_dir is not None:
        return pathlib.Path(data_dir).expanduser(), True
    if os.environ.get("MNISTC_DATA_DIR"):
        return pathlib.Path(os.environ["MNISTC_DATA_DIR"]).expanduser(), True
    local = pathlib.Path("data", "mnist")
    if local.is_dir():
        return local, False
    cache_home = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(cache_home, "mnistc", "mnist"), True


def _local_file(data_dir, name):
    """The raw file if present, else name.gz if present, else None."""
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(data_dir):
    return [name for name in FILES.values() if _local_file(data_dir, name) is None]


class _MirrorFailure(Exception):
    """Why one mirror could not supply one file (a short phrase)."""


def _download_verified(url, destination, expected_sha256, timeout):
    """Fetch `url` into `destination` atomically, keeping it only if it is gzip
    whose decompressed SHA-256 is `expected_sha256`; else raise _MirrorFailure."""
    # Imported here: they cost every start-up ~25 ms, and only a download needs them.
    import http.client
    import urllib.error
    import urllib.request
    try:
        with _atomic_output(destination) as out:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                size = 0
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise _MirrorFailure(f"more than {MAX_DOWNLOAD_BYTES} bytes")
                    out.write(chunk)
            out.flush()
            with open(out.name, "rb") as downloaded:
                start = downloaded.read(2)
            if start != GZIP_MAGIC:
                raise _MirrorFailure("not a gzip file")
            try:
                digest = _sha256_of_decompressed(out.name)
            except _GZIP_ERRORS as error:
                raise _MirrorFailure(f"corrupt or truncated gzip ({error})") from error
            if digest != expected_sha256:
                raise _MirrorFailure("SHA-256 mismatch")
    except urllib.error.HTTPError as error:
        raise _MirrorFailure(f"HTTP {error.code}") from error
    except urllib.error.URLError as error:
        raise _MirrorFailure(str(error.reason)) from error
    except (OSError, http.client.HTTPException) as error:
        raise _MirrorFailure(str(error) or type(error).__name__) from error


def maybe_download(data_dir, mirrors=MIRRORS, timeout=30.0, checksums=SHA256):
    """Download each of the four files that `data_dir` lacks (neither raw nor .gz).

    Mirrors are tried in order for `<mirror><name>.gz`; a download is kept (as
    `<name>.gz`, atomically) only if it is gzip and the SHA-256 of its
    decompressed content equals `checksums[name]`. Creates `data_dir` if needed.
    Raises DownloadError, one line listing every mirror's failure, if no mirror
    supplies a file. Files already present are not checked or fetched again.
    """
    data_dir = pathlib.Path(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"{data_dir}: cannot create the data folder: {error}") from error
    for name in _missing_files(data_dir):
        failures = []
        for mirror in mirrors:
            try:
                _download_verified(f"{mirror}{name}.gz", data_dir / f"{name}.gz", checksums[name], timeout)
                break
            except _MirrorFailure as failure:
                failures.append(f"{mirror}: {failure}")
        else:
            raise DownloadError(
                f"could not download {name}.gz ({'; '.join(failures)}); "
                f"put the four MNIST files in {data_dir} or pass --data-dir DIR"
            )


def verify_checksums(data_dir, checksums=SHA256):
    """Check the SHA-256 of the decompressed content of the four files in
    `data_dir` (raw or .gz) against `checksums`; DataError on the first mismatch."""
    data_dir = pathlib.Path(data_dir)
    for name in FILES.values():
        path = _local_file(data_dir, name)
        if path is None:
            raise DataError(f"{data_dir / name}: missing (neither {name} nor {name}.gz exists)")
        try:
            digest = _sha256_of_decompressed(path)
        except _GZIP_ERRORS as error:
            raise DataError(f"{path}: cannot read: {error}") from error
        if digest != checksums[name]:
            raise DataError(f"{path}: SHA-256 of the content is {digest}, expected {checksums[name]}")


# ---------------------------------------------------------------- batches


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
            raise ValueError(f"batch_size must be in 1..num_examples={self.num_examples}, got {batch_size}")
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

        Pixels are scaled as TensorFlow did: uint8 * float32(1/255), a multiply by
        the rounded reciprocal, not a division by 255.
        """
        indices = self.next_batch_indices(batch_size)
        images = self._images[indices].astype(np.float32)
        images *= np.float32(1.0 / 255.0)
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
            raise DataError(f"data position {state!r} lacks epochs_completed/index_in_epoch") from error
        if not all(_is_integer(value) for value in (epochs, index)):
            raise DataError(f"data position {state!r} must hold integers")
        permutation = np.asarray(permutation)
        if permutation.ndim != 1 or (permutation.size and not np.issubdtype(permutation.dtype, np.integer)):
            shape = f"{permutation.dtype} {permutation.shape}"
            raise DataError(f"data permutation must be a 1-D integer array, got {shape}")
        if permutation.size == 0:
            if (epochs, index) != (0, 0):
                raise DataError(f"data position {state!r} has no permutation but is past the start")
        else:
            n = self.num_examples
            if permutation.size != n:
                raise DataError(f"data permutation has {permutation.size} entries, the data set {n} examples")
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


def _fake_data_sets(rng):
    """The tutorial's fake data: 10000 all-255 images (1.0 once scaled), label 0."""
    images = np.full((10000, IMAGE_PIXELS), 255, dtype=np.uint8)
    labels = np.zeros(10000, dtype=np.uint8)
    return Datasets(*(DataSet(images, labels, rng) for _ in range(3)))


def _read_pair(images_path, labels_path):
    images = _read_mnist_images(images_path)
    if images.shape[1:] != (IMAGE_ROWS, IMAGE_COLS):
        raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    labels = read_idx_labels(labels_path)
    if images.shape[0] != labels.shape[0]:
        counts = f"{images.shape[0]} images but {labels_path} has {labels.shape[0]} labels"
        raise DataError(f"{images_path} has {counts}")
    return images.reshape(images.shape[0], IMAGE_PIXELS), labels


def read_data_sets(data_dir=None, fake_data=False, validation_size=5000, rng=None, download=True):
    """Datasets(train, validation, test) of MNIST, images uint8 [N, 784], labels uint8 [N].

    The folder comes from resolve_data_dir(data_dir); each file may be raw or
    .gz (raw preferred). Missing files are downloaded if `download` and the
    folder may be written (see resolve_data_dir), else DataError. The first
    `validation_size` training examples, in file order, are the validation set
    (ValueError unless 0 <= validation_size <= N). The three DataSets share
    `rng` (default np.random.default_rng()). `fake_data` reads nothing.
    """
    validation_size = operator.index(validation_size)
    rng = np.random.default_rng() if rng is None else rng
    if fake_data:
        return _fake_data_sets(rng)
    data_dir, may_download = resolve_data_dir(data_dir)
    if _missing_files(data_dir) and download and may_download:
        maybe_download(data_dir)
    missing = _missing_files(data_dir)
    if missing:
        why = "downloading is off" if not download else "this folder is only read, never downloaded into"
        raise DataError(
            f"{data_dir}: missing MNIST files {', '.join(missing)} (raw or .gz) and {why}; "
            f"put the four files there or pass --data-dir DIR"
        )
    paths = {key: _local_file(data_dir, name) for key, name in FILES.items()}
    # zlib lets go of the GIL while it inflates: the test pair is read on a second thread
    # while this one reads the (six times larger) training pair. (Imported here: 5 ms
    # that `import mnistc` for inference need not pay.)
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        test_pair = pool.submit(_read_pair, paths["test_images"], paths["test_labels"])
        train_images, train_labels = _read_pair(paths["train_images"], paths["train_labels"])
        test_images, test_labels = test_pair.result()
    if not 0 <= validation_size <= train_images.shape[0]:
        raise ValueError(f"validation_size must be in 0..{train_images.shape[0]}, got {validation_size}")
    return Datasets(
        train=DataSet(train_images[validation_size:], train_labels[validation_size:], rng),
        validation=DataSet(train_images[:validation_size], train_labels[:validation_size], rng),
        test=DataSet(test_images, test_labels, rng),
    )
