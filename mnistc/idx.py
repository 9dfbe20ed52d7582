"""The IDX file format (LeCun's MNIST container), raw or gzip, read with bounded memory.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data, big-endian, C order.
Reading never allocates more than the bytes actually present (or, for gzip,
GZIP_LIKELY_RATIO times the compressed size): a header that claims more than the file can
plausibly hold is refused before the body is read: a raw file's body must be exactly what
its header says; a gzip file's may be at most GZIP_PLAUSIBLE_RATIO times the compressed
size (MNIST's images compress 4.7:1, Fashion-MNIST's 1.8:1) or GZIP_ALWAYS_ALLOWED bytes,
whichever is more, so a small file that claims millions of images (a corrupt header, a
gzip bomb) is an error, not gigabytes. Every fault raises
:class:`mnistc.errors.DataError` naming the file; argument mistakes raise
ValueError/TypeError.
"""

import contextlib
import gzip
import hashlib
import math
import os
import pathlib
import struct
import zlib

import numpy as np

from .errors import DataError
from .fileio import atomic_output

try:  # the `gzip` extra: python-isal's igzip, gzip's API, inflating 2-3x faster
    from isal import igzip as gzip_reader
    from isal.isal_zlib import error as _inflate_error
except ImportError:
    gzip_reader, _inflate_error = gzip, zlib.error

IMAGES_MAGIC = 2051  # 0x00000803: ubyte, 3 dims
LABELS_MAGIC = 2049  # 0x00000801: ubyte, 1 dim
GZIP_MAGIC = b"\x1f\x8b"
MAX_IDX_BYTES = 2**31  # refuse larger bodies before allocating anything
MAX_NDIM = 4
GZIP_PLAUSIBLE_RATIO = 100
GZIP_ALWAYS_ALLOWED = 64 << 20
GZIP_LIKELY_RATIO = 8  # the body's buffer starts this large: MNIST's in one allocation
CHUNK_BYTES = 1 << 20

# IDX type codes; the data on disk is big-endian.
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(np.int16),
    0x0C: np.dtype(np.int32),
    0x0D: np.dtype(np.float32),
    0x0E: np.dtype(np.float64),
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}

# What a corrupt gzip stream can raise through either reader (BadGzipFile is an OSError).
GZIP_ERRORS = (OSError, EOFError, zlib.error, _inflate_error)


class _Fault(Exception):
    """A structural fault in an IDX stream; turned into DataError with the path."""


@contextlib.contextmanager
def open_decompressed(path):
    """Open `path` for binary reading, through gzip if it starts with 1f 8b (with
    gzip_reader: python-isal's igzip when installed, else the standard library's gzip;
    both check the CRC and length and accept the same files).

    Yields (stream, is_gzip, size, likely): for a raw file its exact size, twice; for
    gzip the most content it is believed to hold (see the module docstring) and what it
    likely holds, GZIP_LIKELY_RATIO times the compressed size.
    """
    with open(path, "rb") as file:
        is_gzip = file.read(2) == GZIP_MAGIC
        file.seek(0)
        size = os.fstat(file.fileno()).st_size
        if is_gzip:
            with gzip_reader.GzipFile(fileobj=file) as stream:
                most = max(size * GZIP_PLAUSIBLE_RATIO, GZIP_ALWAYS_ALLOWED)
                yield stream, True, most, size * GZIP_LIKELY_RATIO
        else:
            yield file, False, size, size


def _read_up_to(stream, count, likely=0):
    """Read `count` bytes, fewer only at end of stream, into a uint8 array. Memory grows
    with the bytes actually read, never with `count` (which may come from a hostile
    header): the buffer starts at one chunk, or at `likely` bytes (what the file's own
    size says it holds), and grows fourfold as it fills. Each growth copies what was
    read into fresh pages, so a `likely` that covers the body reads it in one buffer.

    The buffer is NumPy's own allocation, which on Linux is backed by transparent huge
    pages from 4 MiB up: the training step gathers randomly chosen 784-byte rows, and with
    4 KiB pages nearly every row costs a TLB miss."""
    buf = np.empty(min(count, max(likely, CHUNK_BYTES)), np.uint8)
    filled = 0
    while filled < count:
        if filled == buf.size:
            grown = np.empty(min(count, 4 * buf.size), np.uint8)
            grown[:filled] = buf
            buf = grown
        # At most a chunk per call: a gzip stream's readinto reads into a temporary.
        got = stream.readinto(memoryview(buf)[filled : min(buf.size, filled + CHUNK_BYTES)])
        if not got:
            break
        filled += got
    return buf[:filled]


def sha256_of_content(path):
    """Hex SHA-256 of the file's content, decompressed if it is gzip."""
    digest = hashlib.sha256()
    with open_decompressed(path) as (stream, _, _, _):
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _parse(stream, is_gzip, size, likely, expected_magic):
    """Parse one IDX stream; raise _Fault on any structural problem."""
    header = _read_up_to(stream, 4)
    if len(header) < 4:
        raise _Fault(f"truncated header: expected 4 bytes, found {len(header)}")
    magic = int.from_bytes(header, "big")
    zeros, dtype_code, ndim = struct.unpack(">HBB", header)
    if expected_magic is not None and magic != expected_magic:
        raise _Fault(f"wrong magic number {magic} (0x{magic:08x}), expected {expected_magic}")
    if zeros != 0:
        raise _Fault(f"wrong magic number 0x{magic:08x}: an IDX file starts with two zero bytes")
    if dtype_code not in _DTYPES:
        raise _Fault(f"unknown IDX data type code 0x{dtype_code:02x}")
    if not 1 <= ndim <= MAX_NDIM:
        raise _Fault(f"unsupported number of dimensions {ndim} (expected 1..{MAX_NDIM})")

    dims_bytes = _read_up_to(stream, 4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise _Fault(
            f"truncated header: expected {4 + 4 * ndim} bytes, found {4 + len(dims_bytes)}"
        )
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    dtype = _DTYPES[dtype_code]
    nbytes = math.prod(dims) * dtype.itemsize
    if nbytes > MAX_IDX_BYTES:
        raise _Fault(
            f"dimensions {dims} need {nbytes} bytes of data, more than the limit {MAX_IDX_BYTES}"
        )

    room = size - (4 + 4 * ndim)  # checked before anything is read or allocated
    if is_gzip and nbytes > room:
        raise _Fault(
            f"dimensions {dims} claim {nbytes} bytes of data, more than a gzip file of this "
            f"size plausibly holds (at most {room}); a corrupt header or a gzip bomb"
        )
    if not is_gzip:
        if room < nbytes:
            raise _Fault(f"truncated data: expected {nbytes} bytes of data, found {room}")
        if room > nbytes:
            raise _Fault(
                f"{room - nbytes} bytes of trailing garbage after the {nbytes} bytes of data"
            )
    body = _read_up_to(stream, nbytes, likely)
    if len(body) < nbytes:
        raise _Fault(f"truncated data: expected {nbytes} bytes of data, found {len(body)}")
    if stream.read(1):  # reads at most a buffer's worth: a gzip bomb is not inflated
        raise _Fault(f"trailing garbage after the {nbytes} bytes of data")
    big_endian = body.view(dtype.newbyteorder(">"))
    return big_endian.astype(dtype, copy=False).reshape(dims)


def read(path, expected_magic=None):
    """Read any IDX file, raw or gzip (detected by its magic bytes, not its name).

    Returns a native-endian array with the file's dtype and shape (zero-sized dimensions
    are allowed here). `expected_magic` (e.g. IMAGES_MAGIC) makes another magic an error.
    Raises DataError on any fault.
    """
    path = pathlib.Path(path)
    is_gzip = False
    try:
        with open_decompressed(path) as (stream, is_gzip, size, likely):
            return _parse(stream, is_gzip, size, likely, expected_magic)
    except _Fault as fault:
        raise DataError(f"{path}: {fault}") from None
    except GZIP_ERRORS as error:
        problem = "corrupt or truncated gzip data" if is_gzip else "cannot read"
        detail = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise DataError(f"{path}: {problem}: {detail}") from None


def write(path, array, compress=None):
    """Write `array` (uint8, int8, int16, int32, float32 or float64; 1 to 4 dims)
    as an IDX file, atomically. compress=None gzips iff `path` ends with ".gz"."""
    path = pathlib.Path(path)
    array = np.asarray(array)
    if array.dtype not in _CODES:
        raise TypeError(
            f"IDX cannot store dtype {array.dtype}; use one of {sorted(map(str, _CODES))}"
        )
    if not 1 <= array.ndim <= MAX_NDIM:
        raise ValueError(f"IDX arrays must have 1..{MAX_NDIM} dimensions, got {array.ndim}")
    if max(array.shape) >= 2**32:
        raise ValueError(f"IDX dimensions must fit in 32 bits, got {array.shape}")
    if compress is None:
        compress = path.name.endswith(".gz")
    header = struct.pack(f">HBB{array.ndim}I", 0, _CODES[array.dtype], array.ndim, *array.shape)
    body = (
        np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).reshape(-1).view(np.uint8)
    )
    with atomic_output(path) as out:
        if compress:  # mtime=0: the same array always gives the same bytes
            with gzip.GzipFile(filename=path.name, fileobj=out, mode="wb", mtime=0) as sink:
                sink.write(header)
                sink.write(body)
        else:
            out.write(header)
            out.write(body)


def read_images(path, shape=None):
    """uint8 [N, rows, cols] from an images file (magic 2051, N >= 1, nonzero size);
    `shape` (rows, cols), when given, must match."""
    images = read(path, IMAGES_MAGIC)
    if images.shape[0] == 0:
        raise DataError(f"{path}: contains no items")
    if images.size == 0:
        raise DataError(f"{path}: images have zero size {images.shape[1]}x{images.shape[2]}")
    if shape is not None and images.shape[1:] != tuple(shape):
        found = "x".join(map(str, images.shape[1:]))
        raise DataError(f"{path}: images are {found}, expected {shape[0]}x{shape[1]}")
    return images


def read_labels(path, num_classes):
    """uint8 [N] from a labels file (magic 2049, N >= 1, every label < num_classes)."""
    labels = read(path, LABELS_MAGIC)
    if labels.shape[0] == 0:
        raise DataError(f"{path}: contains no items")
    out_of_range = np.flatnonzero(labels >= num_classes)
    if out_of_range.size:
        index = int(out_of_range[0])
        raise DataError(
            f"{path}: label {labels[index]} at index {index} is outside 0..{num_classes - 1}"
        )
    return labels
