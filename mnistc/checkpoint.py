"""Save and load mnistc checkpoints (the safetensors layout) and manage a folder of them.

It is a writer and a validating reader for the safetensors file layout, done with NumPy
and the standard library alone, plus CheckpointManager, which keeps the newest few
checkpoints of a run in one folder and restores the newest readable one. Every write is
atomic (mnistc.fileio), so a process killed at any instant leaves the previous
checkpoints intact. It knows nothing about models, optimisers or RNGs (callers pass
arrays and a str->str metadata map; mnistc.metadata gives that map its meaning), never
pickles, and never imports the `safetensors` package (only the tests do).

File layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header
length N, N bytes of UTF-8 JSON header, then the data section. The header maps each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to
the data section, tensors packed without gaps, little-endian, C order) and has a
``"__metadata__"`` str->str map holding ``format``, ``format_version`` and a checksum,
and whatever the caller adds.

Checksums by format version:
  2 (written now): ``checksum`` = "sha256:<hex>", the SHA-256 of the whole file — length
    field, header and data — with those 64 hex digits read as zeros. Editing any byte,
    of the metadata included, is detected.
  1 (mnistc 0.1): ``data_sha256``, the SHA-256 of the data section only; such files still
    load, but an edit to their header goes unnoticed.

Every problem with a file raises :class:`mnistc.errors.CheckpointError` with a one-line
message ``"<path>: <reason>"``; the error also carries ``.path`` and ``.reason``.
Argument mistakes raise ValueError.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import stat
import struct
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import CheckpointError
from .fileio import atomic_write

FORMAT_NAME = "mnistc-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = ("1", "2")
CHECKSUM_KEY = "checksum"
_CHECKSUM_PREFIX = "sha256:"
_CHECKSUM_ZEROS = "0" * 64
# How the checksum's value starts in a header we wrote (compact JSON); inside any other
# string value the quotes would be escaped, so in a valid header this occurs only once.
_CHECKSUM_MARK = f'"{CHECKSUM_KEY}":"{_CHECKSUM_PREFIX}'.encode()
INDEX_NAME = "checkpoint"
# Our headers are a few KB; the cap only stops a corrupt length field from
# making us allocate gigabytes before we find out the file is garbage.
MAX_HEADER_BYTES = 100 * 1024 * 1024
_MAX_NDIM = 32

# safetensors dtype code -> little-endian NumPy dtype. BF16 and the F8 types
# exist in safetensors but not in NumPy, so we neither write nor read them.
_DTYPES = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
_CODE_OF = {(dt.kind, dt.itemsize): code for code, dt in _DTYPES.items()}


def _error(path, reason: str) -> CheckpointError:
    return CheckpointError.about(Path(path), reason)


def warn_fallback(path, error: CheckpointError) -> None:
    """The `on_fallback` of the command lines: one warning line on stderr."""
    print(
        f"warning: skipping {path}: {error.reason}; falling back to the previous checkpoint",
        file=sys.stderr,
        flush=True,
    )


def _clip(text: str) -> str:
    # Hostile headers can hold megabytes in one field; messages stay one short line.
    return text if len(text) <= 60 else text[:57] + "..."


def _short(value) -> str:
    return _clip(repr(value))


# ---------------------------------------------------------------- writing


def _encode(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None):
    """Validate the arguments and return the file's content as a list of byte chunks.

    Everything that can be wrong with the arguments is found here, before any
    file is touched.
    """
    if not isinstance(tensors, Mapping):
        raise ValueError(
            f"tensors must be a mapping of name -> numpy array, got {type(tensors).__name__}"
        )
    buffers = {}
    for name, array in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(
                f"tensor names must be non-empty strings other than '__metadata__', got {name!r}"
            )
        if not isinstance(array, np.ndarray):
            raise ValueError(f"tensor {name!r} must be a numpy array, got {type(array).__name__}")
        if (array.dtype.kind, array.dtype.itemsize) not in _CODE_OF:
            raise ValueError(
                f"tensor {name!r} has dtype {array.dtype}, which a checkpoint cannot store"
            )
        # Little-endian, C order, whatever the caller's byte order and strides.
        buffers[name] = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    user_metadata = {} if metadata is None else metadata
    if not isinstance(user_metadata, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in user_metadata.items()
    ):
        raise ValueError("metadata must map str to str (store structured values as JSON strings)")

    # Widest items first, so every tensor starts aligned to its item size
    # (the data section itself starts 8-aligned): readers that map the file
    # get aligned views. The header keeps the caller's order.
    order = sorted(buffers, key=lambda name: -buffers[name].dtype.itemsize)
    entries, offset = {}, 0
    for name in order:
        array = tensors[name]
        size = buffers[name].nbytes
        code = _CODE_OF[(array.dtype.kind, array.dtype.itemsize)]
        entries[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    # Ours win, and an old checksum key is dropped: a metadata map read back from a
    # checkpoint may be passed in again.
    meta = {k: v for k, v in user_metadata.items() if k not in ("data_sha256", CHECKSUM_KEY)}
    meta.update(format=FORMAT_NAME, format_version=str(FORMAT_VERSION))
    meta[CHECKSUM_KEY] = _CHECKSUM_PREFIX + _CHECKSUM_ZEROS
    header = {"__metadata__": meta, **{name: entries[name] for name in tensors}}
    try:
        header_bytes = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"tensor names and metadata must be valid Unicode: {error}") from None
    # Trailing spaces (allowed by safetensors) make the data section 8-aligned.
    header_bytes += b" " * (-(8 + len(header_bytes)) % 8)
    length = struct.pack("<Q", len(header_bytes))
    data = [buffers[name].reshape(-1).view(np.uint8) for name in order]
    digest = hashlib.sha256(length)
    digest.update(header_bytes)
    for chunk in data:
        digest.update(chunk)
    at = header_bytes.index(_CHECKSUM_MARK) + len(_CHECKSUM_MARK)
    header_bytes = header_bytes[:at] + digest.hexdigest().encode() + header_bytes[at + 64 :]
    return [length, header_bytes, *data]


def _checksum_of(length, header_raw, data, path):
    """The file's SHA-256 with its checksum digits read as zeros, and the digits stored."""
    if header_raw.count(_CHECKSUM_MARK) != 1:  # not the header mnistc wrote
        raise _error(path, "checksum mismatch: the header was rewritten or edited")
    at = header_raw.index(_CHECKSUM_MARK) + len(_CHECKSUM_MARK)
    stored = header_raw[at : at + 64].decode("ascii", "replace")
    digest = hashlib.sha256(length)
    digest.update(header_raw[:at])
    digest.update(_CHECKSUM_ZEROS.encode())
    digest.update(header_raw[at + 64 :])
    digest.update(data)
    return digest.hexdigest(), stored


def save_file(
    path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    """Write `tensors` and `metadata` to `path` atomically.

    Arrays may have any numeric or bool dtype NumPy and safetensors share
    (f2/f4/f8, i1..i8, u1..u8, bool), any byte order and any strides; they are
    stored little-endian in C order. The keys format, format_version and
    checksum are set by us and override the caller's. Bad arguments raise
    ValueError before anything is written; I/O failures raise CheckpointError
    and leave no temp file behind.
    """
    chunks = _encode(tensors, metadata)
    try:
        atomic_write(Path(path), chunks)
    except OSError as error:
        raise _error(path, f"cannot write checkpoint: {error.strerror or error}") from error


# ---------------------------------------------------------------- reading


def _reject_duplicates(pairs):
    # json keeps the last of duplicate keys; that would hide a tensor entry.
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {_short(key)}")
        result[key] = value
    return result


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_entry(path, name, entry, data_len):
    """Check one tensor entry of the header; return (begin, end, name, dtype, shape)."""
    what = f"tensor {_short(name)}"
    if not isinstance(entry, dict):
        raise _error(path, f"{what}: header entry is not a JSON object")
    code = entry.get("dtype")
    if not isinstance(code, str) or code not in _DTYPES:
        raise _error(path, f"{what}: unknown dtype {_short(code)}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > _MAX_NDIM or not all(map(_is_count, shape)):
        raise _error(path, f"{what}: bad shape {_short(shape)}")
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(map(_is_count, offsets))
        or offsets[0] > offsets[1]
    ):
        raise _error(path, f"{what}: bad data_offsets {_short(offsets)}")
    begin, end = offsets
    if end > data_len:
        raise _error(
            path, f"{what} ends at byte {end} of a {data_len}-byte data section (file truncated?)"
        )
    nbytes = _DTYPES[code].itemsize * math.prod(shape)
    if end - begin != nbytes:
        raise _error(
            path, f"{what}: {code} {shape} needs {nbytes} bytes but its offsets span {end - begin}"
        )
    return begin, end, name, _DTYPES[code], tuple(shape)


class _Header(NamedTuple):
    meta: dict
    specs: list  # (begin, end, name, dtype, shape) in header order
    data_len: int
    is_mnistc: bool
    length: bytes  # the 8-byte length field
    raw: bytes  # the header's bytes as stored


def _read_header(f, path, require_mnistc: bool) -> _Header:
    """Read and check the header (structure, format and version; not the checksum)."""
    size = os.fstat(f.fileno()).st_size
    if size < 8:
        raise _error(path, f"file is {size} bytes, too short to be a checkpoint")
    length = f.read(8)
    (header_len,) = struct.unpack("<Q", length)
    if header_len > MAX_HEADER_BYTES:
        raise _error(
            path,
            f"header length {header_len} is absurd (limit {MAX_HEADER_BYTES}); not a checkpoint",
        )
    if 8 + header_len > size:
        raise _error(
            path,
            f"header length {header_len} runs past the end of the {size}-byte file (truncated?)",
        )
    raw = f.read(header_len)
    if len(raw) != header_len:
        raise _error(path, "file shrank while being read")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except UnicodeDecodeError:
        raise _error(path, "header is not UTF-8; not a checkpoint") from None
    except (ValueError, RecursionError) as error:
        raise _error(path, f"header is not valid JSON ({_clip(str(error))})") from None
    if not isinstance(header, dict):
        raise _error(path, f"header is a JSON {type(header).__name__}, not an object")

    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _error(path, "__metadata__ is not a map of strings to strings")
    data_len = size - 8 - header_len
    specs = [
        _parse_entry(path, name, entry, data_len)
        for name, entry in header.items()
        if name != "__metadata__"
    ]
    # Tensors must tile the data section exactly, as safetensors itself demands:
    # an overlap or gap means a damaged header, extra bytes a damaged file.
    position = 0
    for begin, end, name, _, _ in sorted(specs, key=lambda spec: spec[:2]):
        if begin != position:
            problem = (
                "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            )
            raise _error(
                path,
                f"tensor {_short(name)} {problem} "
                f"(data_offsets start at {begin}, expected {position})",
            )
        position = end
    if position != data_len:
        raise _error(
            path, f"data section is {data_len} bytes but the tensors account for {position}"
        )

    is_mnistc = meta.get("format") == FORMAT_NAME
    if require_mnistc and not is_mnistc:
        raise _error(
            path, f'not an mnistc checkpoint (no "format": "{FORMAT_NAME}" in its metadata)'
        )
    if is_mnistc:
        version = meta.get("format_version")
        if version not in READABLE_VERSIONS:
            raise _error(
                path,
                f"unsupported format_version {_short(version)} "
                f"(this mnistc reads {', '.join(READABLE_VERSIONS)})",
            )
        if version == "1" and not re.fullmatch(r"[0-9a-f]{64}", meta.get("data_sha256", "")):
            raise _error(path, "metadata lacks a valid data_sha256")
        if version != "1" and not re.fullmatch(
            rf"{_CHECKSUM_PREFIX}[0-9a-f]{{64}}", meta.get(CHECKSUM_KEY, "")
        ):
            raise _error(path, f"metadata lacks a valid {CHECKSUM_KEY}")
    return _Header(dict(meta), specs, data_len, is_mnistc, length, raw)


def _open(path):
    # O_NONBLOCK: opening a FIFO named like a checkpoint must not wait for a writer.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as error:
        raise _error(path, f"cannot read checkpoint: {error.strerror or error}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _error(path, "is not a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def load_file(path, verify: bool = True, *, require_mnistc: bool = True):
    """Load a checkpoint; return (tensors, metadata).

    Checks the whole structure, and with `verify` the checksum (format 2: the
    whole file; format 1: the data section). Arrays are owned, writable,
    native-endian copies, in header order. `require_mnistc=False` also accepts
    a plain safetensors file (one with no mnistc format keys; it has no
    checksum to verify). Every fault raises CheckpointError naming the file.
    """
    with _open(path) as f:
        try:
            header = _read_header(f, path, require_mnistc)
            # data_len comes from the file size, so this never allocates more
            # than the file holds, whatever the header claims.
            data = f.read(header.data_len)
        except OSError as error:
            raise _error(path, f"cannot read checkpoint: {error.strerror or error}") from None
    if len(data) != header.data_len:
        raise _error(path, "file shrank while being read")
    meta = header.meta
    if verify and header.is_mnistc:
        if meta["format_version"] == "1":
            if hashlib.sha256(data).hexdigest() != meta["data_sha256"]:
                raise _error(path, "data checksum mismatch: the file is corrupt")
        else:
            computed, stored = _checksum_of(header.length, header.raw, data, path)
            if computed != stored or meta[CHECKSUM_KEY] != _CHECKSUM_PREFIX + stored:
                raise _error(path, "checksum mismatch: the file is corrupt or was edited")
    tensors = {}
    for begin, end, name, dtype, shape in header.specs:
        view = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=begin)
        try:
            tensors[name] = view.reshape(shape).astype(dtype.newbyteorder("="))
        except ValueError as error:  # e.g. shape (0, 2**62): no bytes, but too big for NumPy
            raise _error(
                path, f"tensor {_short(name)}: shape {list(shape)} is not usable ({error})"
            ) from None
    return tensors, meta


def read_header(path, *, require_mnistc: bool = True):
    """(metadata, {tensor name: shape}) after checking the header's structure; reads no
    tensor data and so checks no checksum (load_file does)."""
    with _open(path) as f:
        try:
            header = _read_header(f, path, require_mnistc)
        except OSError as error:
            raise _error(path, f"cannot read checkpoint: {error.strerror or error}") from None
    return header.meta, {name: shape for _, _, name, _, shape in header.specs}


def read_metadata(path, *, require_mnistc: bool = True) -> dict[str, str]:
    """A checkpoint's metadata after checking its header (see read_header)."""
    return read_header(path, require_mnistc=require_mnistc)[0]


# ---------------------------------------------------------------- the folder


class CheckpointManager:
    """The checkpoints of one run: ``<directory>/<prefix>-<step>.safetensors``.

    The directory scan is the truth; the index file ``<directory>/checkpoint``
    (JSON ``{"latest": name, "all": [names, oldest first]}``) is written for
    people and tools and never read back, so losing or corrupting it loses
    nothing. "Newest" means highest step. Only names that match the pattern
    exactly (canonical step numbers, no leading zeros), the index and our own
    stale temp files are ever deleted.
    """

    def __init__(self, directory, prefix: str = "checkpoint", keep: int | None = 5):
        if (
            not isinstance(prefix, str)
            or not prefix
            or any(c in prefix for c in "/\\")
            or prefix.startswith(".")
        ):
            raise ValueError(f"prefix must be a plain file-name stem, got {prefix!r}")
        if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
            raise ValueError(f"keep must be a positive int or None (keep all), got {keep!r}")
        self.directory = Path(directory)
        self.prefix = prefix
        self.keep = keep
        stem = re.escape(prefix)
        self._pattern = re.compile(rf"{stem}-(0|[1-9][0-9]*)\.safetensors")
        # What fileio.temp_name makes for a checkpoint or the index, left by a killed writer.
        self._temp_pattern = re.compile(
            rf"\.(?:{stem}-(?:0|[1-9][0-9]*)\.safetensors|{re.escape(INDEX_NAME)})\.tmp-[0-9a-f]+"
        )

    @property
    def index_path(self) -> Path:
        return self.directory / INDEX_NAME

    def path_for(self, step: int) -> Path:
        if not _is_count(step):
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        return self.directory / f"{self.prefix}-{step}.safetensors"

    def _scan(self, pattern, files_only: bool = True) -> list[str]:
        try:
            with os.scandir(self.directory) as entries:
                return [
                    e.name
                    for e in entries
                    if pattern.fullmatch(e.name) and (e.is_file() or not files_only)
                ]
        except FileNotFoundError:
            return []
        except OSError as error:
            raise _error(
                self.directory, f"cannot list checkpoints: {error.strerror or error}"
            ) from None

    def step_of(self, path) -> int | None:
        """The step a file's name says (``<prefix>-<step>.safetensors``), or None."""
        named = self._pattern.fullmatch(Path(path).name)
        return int(named.group(1)) if named else None

    def list(self, files_only: bool = True) -> list[tuple[int, Path]]:
        """Existing checkpoint files as (step, path), step ascending. Temp files never appear;
        with `files_only=False`, neither do they, but anything else named like a checkpoint
        (a directory, a device) does."""
        names = self._scan(self._pattern, files_only)
        return sorted((self.step_of(name), self.directory / name) for name in names)

    def latest_step(self) -> int | None:
        found = self.list()
        return found[-1][0] if found else None

    def has_checkpoints(self) -> bool:
        return bool(self.list())

    def save(
        self,
        step: int,
        tensors: Mapping[str, np.ndarray],
        metadata: Mapping[str, str] | None = None,
    ) -> Path:
        """Write the checkpoint for `step`, prune to `keep`, rewrite the index; return its path.

        Afterwards the folder holds this checkpoint and the `keep - 1`
        highest-step others. Pruning happens after the new file is durable
        but before it is renamed into place, so at no instant are there more
        than `keep` complete checkpoints, and a failed write (disk full)
        deletes nothing. Stale temp files of killed writers are removed; one
        folder is meant to have one writer at a time.
        """
        path = self.path_for(step)
        chunks = _encode(tensors, metadata)  # argument errors before any I/O
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write(path, chunks, before_replace=lambda: self._prune(step))
        except OSError as error:
            raise _error(path, f"cannot write checkpoint: {error.strerror or error}") from error
        try:
            names = [p.name for _, p in self.list()]
            index = (
                json.dumps({"latest": names[-1] if names else None, "all": names}, indent=1) + "\n"
            )
            atomic_write(self.index_path, [index.encode("utf-8")])
            self._remove(self._scan(self._temp_pattern))
        except OSError as error:
            raise _error(
                self.index_path, f"cannot write the checkpoint index: {error.strerror or error}"
            ) from error
        return path

    def _prune(self, new_step: int) -> None:
        if self.keep is None:
            return
        others = [p for s, p in self.list() if s != new_step]
        self._remove(p.name for p in others[: max(0, len(others) - (self.keep - 1))])

    def _remove(self, names) -> None:
        for name in names:
            # Oldest first (callers pass ascending order): a crash midway keeps the newest.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)

    def restore_latest(
        self,
        on_fallback: Callable[[Path, CheckpointError], None] | None = None,
        load: Callable = load_file,
    ):
        """The newest readable checkpoint as (step, tensors, metadata); None if there are none.

        Checkpoints are tried newest first with `load(path)` -> (tensors, metadata)
        (default load_file, fully verified; mnistc.metadata.load_checkpoint also
        validates what the metadata means). When one fails and an older one
        remains, `on_fallback(path, error)` is called and the older one is tried;
        anything named like a checkpoint that is not a regular file counts as a
        failure. If every one fails, CheckpointError lists them all.
        """
        found = self.list(files_only=False)
        failures = []
        for i, (step, path) in enumerate(reversed(found)):
            try:
                if not path.is_file():
                    raise _error(path, "is not a regular file")
                tensors, metadata = load(path)
            except CheckpointError as error:
                failures.append(str(error))
                if on_fallback is not None and i + 1 < len(found):
                    on_fallback(path, error)
                continue
            return step, tensors, metadata
        if failures:
            raise _error(self.directory, "no readable checkpoint: " + "; ".join(failures))
        return None

    def remove_all(self) -> None:
        """Delete our checkpoints, the index and our stale temp files; nothing else."""
        try:
            self._remove([INDEX_NAME] if self.index_path.is_file() else [])
            self._remove(p.name for _, p in self.list())
            self._remove(self._scan(self._temp_pattern))
        except OSError as error:
            raise _error(
                self.directory, f"cannot remove checkpoints: {error.strerror or error}"
            ) from error
