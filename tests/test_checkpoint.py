# tests/test_checkpoint.py: tests of mnistc/checkpoint.py.
#
# It is: round trips (also through the real `safetensors` package), one test
# per kind of broken file, the manager's retention/fallback/cleanup, fuzzing
# of the reader with hypothesis, and a SIGKILL test of crash safety.
# It is not: a test of what the trainer stores in a checkpoint.
import importlib.util
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistc import checkpoint
from mnistc.checkpoint import CheckpointManager, load_file, read_metadata, save_file
from mnistc.errors import CheckpointError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _sample_tensors():
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f64": rng.standard_normal(7),
        "i32": np.arange(-4, 8, dtype=np.int32).reshape(2, 2, 3),
        "i64": np.array([2**62, -(2**63), 0, 1], dtype=np.int64),
        "u8": np.arange(13, dtype=np.uint8),  # odd size: the next tensor would be misaligned
        "scalar": np.array(3.25, dtype=np.float64),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "empty_i32": np.zeros((2, 0), dtype=np.int32),
        "strided": np.arange(40, dtype=np.float32).reshape(5, 8)[::2, 1::3],
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)),
    }


def _expected_bytes(array):
    native = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    return native.tobytes()


@pytest.fixture
def valid_file(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file(
        path, _sample_tensors(), {"global_step": "12", "model": json.dumps({"hidden": [128, 32]})}
    )
    return path


def _split(raw):
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header, data):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("the safetensors package is required in CI (pip install safetensors)")
        pytest.skip(
            "safetensors is not installed (pip install safetensors); "
            "the compatibility check needs it"
        )
    return safetensors.numpy


# ---------------------------------------------------------------- round trip


def test_round_trip_bytes_dtypes_shapes(valid_file):
    tensors, metadata = load_file(valid_file)
    expected = _sample_tensors()
    assert list(tensors) == list(expected)  # header keeps the caller's order
    for name, want in expected.items():
        got = tensors[name]
        assert got.shape == want.shape, name
        assert got.dtype == want.dtype.newbyteorder("="), name
        assert got.dtype.isnative, name
        assert got.tobytes() == _expected_bytes(want), name
        # Owned and writable: the caller may update parameters in place.
        assert got.flags.owndata and got.flags.writeable and got.flags.c_contiguous, name
    assert metadata["global_step"] == "12"
    assert json.loads(metadata["model"]) == {"hidden": [128, 32]}
    assert metadata["format"] == "mnistc-checkpoint"
    assert metadata["format_version"] == str(checkpoint.FORMAT_VERSION) == "2"
    assert read_metadata(valid_file) == metadata


def test_layout_is_aligned_and_packed(valid_file):
    raw = valid_file.read_bytes()
    header, data = _split(raw)
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0 and raw[8 : 8 + n].rstrip(b" ").endswith(b"}")
    spans = sorted(tuple(e["data_offsets"]) for k, e in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and spans[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    itemsize = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "U8": 1}
    for name, entry in header.items():
        if name != "__metadata__":
            assert entry["data_offsets"][0] % itemsize[entry["dtype"]] == 0, name
    import hashlib

    stored = header["__metadata__"]["checksum"]
    assert stored.startswith("sha256:") and raw.count(stored.encode()) == 1
    zeroed = raw.replace(stored[7:].encode(), b"0" * 64)
    assert hashlib.sha256(zeroed).hexdigest() == stored[7:]  # the whole file, digits as zeros


def test_loads_with_the_safetensors_package(valid_file):
    st_numpy = _safetensors_numpy()
    theirs = st_numpy.load_file(str(valid_file))
    ours, _ = load_file(valid_file)
    assert set(theirs) == set(ours)
    for name in ours:
        assert theirs[name].dtype == ours[name].dtype and theirs[name].shape == ours[name].shape, (
            name
        )
        assert theirs[name].tobytes() == ours[name].tobytes(), name


def test_empty_checkpoint_and_reserved_metadata_keys_are_ours(tmp_path):
    path = tmp_path / "empty.safetensors"
    save_file(
        path,
        {},
        {
            "format": "forged",
            "data_sha256": "0" * 64,
            "format_version": "9",
            "checksum": "sha256:" + "1" * 64,
        },
    )
    tensors, metadata = load_file(path)
    assert tensors == {}
    assert metadata["format"] == "mnistc-checkpoint" and metadata["format_version"] == "2"
    assert "data_sha256" not in metadata and metadata["checksum"] != "sha256:" + "1" * 64


@pytest.mark.parametrize(
    "tensors, metadata",
    [
        ({"x": [1.0, 2.0]}, None),
        ({"x": np.array(["a", "b"])}, None),
        ({"x": np.array([object()])}, None),
        ({"x": np.zeros(2, dtype=np.complex64)}, None),
        ({"": np.zeros(2)}, None),
        ({"__metadata__": np.zeros(2)}, None),
        ({1: np.zeros(2)}, None),
        ({"x": np.zeros(2)}, {"step": 5}),
        ({"x": np.zeros(2)}, {"bad\ud800": "x"}),
    ],
)
def test_save_rejects_bad_arguments_before_writing(tmp_path, tensors, metadata):
    with pytest.raises(ValueError):
        save_file(tmp_path / "x.safetensors", tensors, metadata)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_temp_and_no_file(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", broken_fsync)
    with pytest.raises(
        CheckpointError, match="x.safetensors: cannot write checkpoint: No space left"
    ):
        save_file(tmp_path / "x.safetensors", {"a": np.zeros(3)})
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_atomic_replacement(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file(path, {"a": np.zeros(3)})
    save_file(path, {"a": np.ones(5)})
    assert load_file(path)[0]["a"].tolist() == [1.0] * 5
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


# ---------------------------------------------------------------- broken files


def _edit_header(edit):
    def mutate(raw):
        header, data = _split(raw)
        edit(header)
        return _join(header, data)

    return mutate


def _set(path, value):
    def edit(header):
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _flip_data_byte(raw):
    out = bytearray(raw)
    out[-5] ^= 0x01
    return bytes(out)


def _drop_last_tensor_bytes(raw):
    header, data = _split(raw)
    last = max(
        e["data_offsets"][1] - e["data_offsets"][0]
        for k, e in header.items()
        if k != "__metadata__"
    )
    return raw[:-last]


def _duplicate_key(raw):
    header, data = _split(raw)
    text = json.dumps(header)[:-1] + ', "f32": ' + json.dumps(header["f32"]) + "}"
    return struct.pack("<Q", len(text)) + text.encode() + data


def _overlap(header):
    header["u8"]["data_offsets"] = [0, 13]


BROKEN = {
    "empty file": (lambda raw: b"", "too short"),
    "shorter than 8 bytes": (lambda raw: raw[:5], "too short"),
    "absurd header length": (lambda raw: struct.pack("<Q", 2**63 + 5) + raw[8:], "absurd"),
    "header length beyond the file": (
        lambda raw: struct.pack("<Q", len(raw)) + raw[8:],
        "past the end",
    ),
    "truncated in the header": (lambda raw: raw[:100], "past the end"),
    "truncated in the data": (lambda raw: raw[:-1], "truncated"),
    "header not UTF-8": (lambda raw: struct.pack("<Q", 4) + b"{\xff\xfe}", "not UTF-8"),
    "bad JSON": (lambda raw: struct.pack("<Q", 9) + b'{"a": 1,,', "not valid JSON"),
    "empty header": (lambda raw: struct.pack("<Q", 0), "not valid JSON"),
    "JSON not an object": (lambda raw: struct.pack("<Q", 9) + b"[1, 2, 3]", "not an object"),
    "duplicate tensor name": (_duplicate_key, "duplicate key"),
    "missing tensor bytes": (_drop_last_tensor_bytes, "truncated"),
    "extra trailing bytes": (lambda raw: raw + b"\0" * 8, "data section is"),
    "unknown dtype": (_edit_header(_set(["f32", "dtype"], "F33")), "unknown dtype 'F33'"),
    "bfloat16 dtype": (_edit_header(_set(["f32", "dtype"], "BF16")), "unknown dtype 'BF16'"),
    "dtype not a string": (_edit_header(_set(["f32", "dtype"], 4)), "unknown dtype"),
    "shape not matching offsets": (_edit_header(_set(["f32", "shape"], [3, 4])), "needs 48 bytes"),
    "dtype not matching offsets": (_edit_header(_set(["f32", "dtype"], "F64")), "needs 120 bytes"),
    "negative dimension": (_edit_header(_set(["f32", "shape"], [-3, -5])), "bad shape"),
    "shape not a list": (_edit_header(_set(["f32", "shape"], "3x5")), "bad shape"),
    "bool dimension": (_edit_header(_set(["scalar", "shape"], [True])), "bad shape"),
    "offsets reversed": (_edit_header(_set(["u8", "data_offsets"], [13, 0])), "bad data_offsets"),
    "offsets past the data": (
        _edit_header(_set(["u8", "data_offsets"], [10**6, 10**6 + 13])),
        "ends at byte",
    ),
    "overlapping offsets": (_edit_header(_overlap), "overlaps"),
    "entry not an object": (_edit_header(_set(["f32"], [1, 2])), "not a JSON object"),
    "metadata value not a string": (
        _edit_header(_set(["__metadata__", "global_step"], 12)),
        "__metadata__",
    ),
    "no mnistc metadata": (
        _edit_header(lambda h: h.pop("__metadata__")),
        "not an mnistc checkpoint",
    ),
    "other format": (
        _edit_header(_set(["__metadata__", "format"], "tf")),
        "not an mnistc checkpoint",
    ),
    "unsupported version": (
        _edit_header(_set(["__metadata__", "format_version"], "3")),
        "format_version '3'",
    ),
    "missing version": (
        _edit_header(lambda h: h["__metadata__"].pop("format_version")),
        "format_version None",
    ),
    "missing checksum": (
        _edit_header(lambda h: h["__metadata__"].pop("checksum")),
        "lacks a valid checksum",
    ),
    "checksum mismatch": (_flip_data_byte, "checksum mismatch: the file is corrupt or was edited"),
    "header rewritten": (
        _edit_header(lambda h: None),
        "checksum mismatch: the header was rewritten",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_file_raises_checkpoint_error_naming_it(valid_file, tmp_path, case):
    mutate, reason = BROKEN[case]
    bad = tmp_path / "bad-file.safetensors"
    bad.write_bytes(mutate(valid_file.read_bytes()))
    with pytest.raises(CheckpointError) as info:
        load_file(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: ") and "\n" not in message
    assert reason in message
    assert info.value.path == bad and message == f"{bad}: {info.value.reason}"


def test_missing_file(tmp_path):
    with pytest.raises(
        CheckpointError, match=r"nope\.safetensors: cannot read checkpoint: No such file"
    ):
        load_file(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="nope"):
        read_metadata(tmp_path / "nope.safetensors")


def test_verify_false_skips_only_the_checksum(valid_file):
    valid_file.write_bytes(_flip_data_byte(valid_file.read_bytes()))
    tensors, _ = load_file(valid_file, verify=False)
    assert tensors["f32"].shape == (3, 5)
    assert read_metadata(valid_file)["global_step"] == "12"  # no data read, no checksum


def test_plain_safetensors_file_needs_require_mnistc_false(tmp_path):
    path = tmp_path / "plain.safetensors"
    path.write_bytes(
        _join({"w": {"dtype": "I16", "shape": [2], "data_offsets": [0, 4]}}, b"\x01\x00\xff\xff")
    )
    with pytest.raises(CheckpointError, match="not an mnistc checkpoint"):
        load_file(path)
    tensors, metadata = load_file(path, require_mnistc=False)
    assert tensors["w"].tolist() == [1, -1] and metadata == {}


def test_file_written_by_safetensors_is_not_an_mnistc_checkpoint(tmp_path):
    st_numpy = _safetensors_numpy()
    path = tmp_path / "theirs.safetensors"
    st_numpy.save_file({"a": np.arange(3, dtype=np.float32)}, str(path), metadata={"x": "y"})
    with pytest.raises(CheckpointError, match="theirs.safetensors: not an mnistc checkpoint"):
        load_file(path)
    assert load_file(path, require_mnistc=False)[0]["a"].tolist() == [0.0, 1.0, 2.0]


# ---------------------------------------------------------------- fuzzing

_FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _load_or_checkpoint_error(path, size):
    tracemalloc.start()
    try:
        load_file(path)
        read_metadata(path)
    except CheckpointError as error:
        assert "\n" not in str(error) and str(error).startswith(str(path))
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # Whatever the header claims, memory follows the file's real size.
    assert peak < 1_000_000 + 20 * size, peak


@_FUZZ
@given(blob=st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(tmp_path, blob):
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(blob)
    _load_or_checkpoint_error(path, len(blob))


@_FUZZ
@given(blob=st.binary(max_size=2048), length=st.integers(0, 2**64 - 1) | st.integers(0, 4096))
def test_fuzz_header_length_and_body(tmp_path, blob, length):
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(struct.pack("<Q", length) + blob)
    _load_or_checkpoint_error(path, len(blob) + 8)


_MUTATION = st.tuples(
    st.sampled_from(["flip", "set", "truncate", "insert", "delete"]),
    st.integers(0, 10**6),
    st.binary(min_size=1, max_size=16),
)


@_FUZZ
@given(mutations=st.lists(_MUTATION, min_size=1, max_size=6))
def test_fuzz_mutated_checkpoint(valid_file, tmp_path, mutations):
    raw = bytearray(valid_file.read_bytes())
    for op, position, payload in mutations:
        i = position % (len(raw) + 1)
        if op == "flip" and i < len(raw):
            raw[i] ^= 1 << (payload[0] % 8)
        elif op == "set" and i < len(raw):
            raw[i] = payload[0]
        elif op == "truncate":
            del raw[i:]
        elif op == "insert":
            raw[i:i] = payload
        elif op == "delete":
            del raw[i : i + payload[0] % 32 + 1]
    path = tmp_path / "mutant.safetensors"
    path.write_bytes(bytes(raw))
    _load_or_checkpoint_error(path, len(raw))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@_FUZZ
@given(data=st.data())
def test_fuzz_well_formed_json_with_wrong_values(valid_file, tmp_path, data):
    # Byte mutations rarely keep the JSON valid; this reaches the field checks.
    header, body = _split(valid_file.read_bytes())
    name = data.draw(st.sampled_from(sorted(header)))
    if name == "__metadata__" or data.draw(st.booleans()):
        header[name] = data.draw(_JSON)
    else:
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))
        header[name][field] = data.draw(_JSON | st.lists(st.integers(-5, 2**64), max_size=4))
    path = tmp_path / "mutant.safetensors"
    path.write_bytes(_join(header, body))
    _load_or_checkpoint_error(path, path.stat().st_size)


def test_zero_size_tensor_with_absurd_dimension(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(
        _join({"w": {"dtype": "F32", "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}}, b"")
    )
    with pytest.raises(CheckpointError, match="huge.safetensors: tensor 'w'"):
        load_file(path, require_mnistc=False)


# ---------------------------------------------------------------- the manager


def _tensors(step):
    return {"w": np.full((4, 3), step, dtype=np.float32), "step": np.array(step)}


def test_manager_retention_and_index(tmp_path):
    manager = CheckpointManager(tmp_path, keep=5)
    assert manager.list() == [] and manager.latest_step() is None and not manager.has_checkpoints()
    assert manager.restore_latest() is None
    for step in range(1, 9):
        path = manager.save(step * 100, _tensors(step * 100), {"global_step": str(step * 100)})
        assert (
            path
            == tmp_path / f"checkpoint-{step * 100}.safetensors"
            == manager.path_for(step * 100)
        )
    assert [s for s, _ in manager.list()] == [400, 500, 600, 700, 800]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["checkpoint"] + [f"checkpoint-{s}.safetensors" for s in (400, 500, 600, 700, 800)]
    )
    index = json.loads(manager.index_path.read_text())
    assert index == {
        "latest": "checkpoint-800.safetensors",
        "all": [f"checkpoint-{s}.safetensors" for s in (400, 500, 600, 700, 800)],
    }
    step, tensors, metadata = manager.restore_latest()
    assert step == 800 and tensors["w"][0, 0] == 800 and metadata["global_step"] == "800"


def test_manager_orders_steps_numerically_and_keep_one(tmp_path):
    manager = CheckpointManager(tmp_path, prefix="model", keep=1)
    for step in (9, 10, 100):
        manager.save(step, _tensors(step))
        assert [s for s, _ in manager.list()] == [step]
    assert manager.latest_step() == 100


def test_manager_keep_none_keeps_everything(tmp_path):
    manager = CheckpointManager(tmp_path, keep=None)
    for step in range(12):
        manager.save(step, _tensors(step))
    assert [s for s, _ in manager.list()] == list(range(12))


def test_restore_falls_back_past_a_corrupt_newest(tmp_path):
    manager = CheckpointManager(tmp_path, keep=5)
    for step in (1, 2, 3):
        manager.save(step, _tensors(step), {"global_step": str(step)})
    newest = manager.path_for(3)
    newest.write_bytes(_flip_data_byte(newest.read_bytes()))
    calls = []
    step, tensors, metadata = manager.restore_latest(on_fallback=lambda p, e: calls.append((p, e)))
    assert step == 2 and tensors["w"][0, 0] == 2 and metadata["global_step"] == "2"
    assert len(calls) == 1 and calls[0][0] == newest
    assert isinstance(calls[0][1], CheckpointError) and "checksum mismatch" in calls[0][1].reason


def test_restore_raises_when_every_checkpoint_is_bad(tmp_path):
    manager = CheckpointManager(tmp_path)
    for step in (1, 2):
        manager.save(step, _tensors(step))
        manager.path_for(step).write_bytes(b"garbage!garbage!")
    calls = []
    with pytest.raises(CheckpointError) as info:
        manager.restore_latest(on_fallback=lambda p, e: calls.append(p))
    message = str(info.value)
    assert "no readable checkpoint" in message and "\n" not in message
    assert "checkpoint-1.safetensors" in message and "checkpoint-2.safetensors" in message
    assert calls == [manager.path_for(2)]  # only when an older one is left to try


def test_missing_or_corrupt_index_loses_nothing(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    for step in (5, 6):
        manager.save(step, _tensors(step))
    manager.index_path.unlink()
    assert [s for s, _ in manager.list()] == [5, 6] and manager.restore_latest()[0] == 6
    manager.index_path.write_text("{not json")
    assert manager.restore_latest()[0] == 6
    manager.save(7, _tensors(7))
    assert json.loads(manager.index_path.read_text())["latest"] == "checkpoint-7.safetensors"


def test_stale_temps_are_ignored_then_cleaned_and_strangers_kept(tmp_path):
    strangers = [
        "notes.txt",
        "checkpoint-007.safetensors",
        "other-3.safetensors",
        "checkpoint-3.safetensors.bak",
        "checkpoint-x.safetensors",
        ".hidden",
        ".checkpoint-3.safetensors.tmp-zz",
    ]
    for name in strangers:
        (tmp_path / name).write_bytes(b"not ours")
    (tmp_path / "sub").mkdir()
    stale = [".checkpoint-9.safetensors.tmp-0123abcd", ".checkpoint.tmp-ff00"]
    for name in stale:
        (tmp_path / name).write_bytes(b"half a checkpoint")
    manager = CheckpointManager(tmp_path, keep=2)
    assert manager.list() == [] and manager.restore_latest() is None
    for step in (1, 2, 3):
        manager.save(step, _tensors(step))
    names = {p.name for p in tmp_path.iterdir()}
    assert names == set(strangers) | {
        "sub",
        "checkpoint",
        "checkpoint-2.safetensors",
        "checkpoint-3.safetensors",
    }
    for name in stale:
        (tmp_path / name).write_bytes(b"half a checkpoint")
    manager.remove_all()
    assert {p.name for p in tmp_path.iterdir()} == set(strangers) | {"sub"}
    assert not manager.has_checkpoints()


def test_saving_an_older_step_keeps_it(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (10, 20, 30):
        manager.save(step, _tensors(step))
    manager.save(5, _tensors(5))  # the file just written is never pruned
    assert [s for s, _ in manager.list()] == [5, 30]


def test_manager_argument_checks(tmp_path):
    for bad in ("", "a/b", ".x", None):
        with pytest.raises(ValueError):
            CheckpointManager(tmp_path, prefix=bad)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError):
            CheckpointManager(tmp_path, keep=bad)
    manager = CheckpointManager(tmp_path)
    for bad in (-1, True, 1.5, "3"):
        with pytest.raises(ValueError):
            manager.path_for(bad)
    with pytest.raises(ValueError):
        manager.save(1, {"x": "not an array"})
    assert list(tmp_path.iterdir()) == []


def test_directory_is_a_file(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("x")
    manager = CheckpointManager(blocker)
    with pytest.raises(CheckpointError, match="runs: cannot list checkpoints"):
        manager.list()
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        manager.save(1, _tensors(1))


# ---------------------------------------------------------------- SIGKILL


def _load_worker_module():
    spec = importlib.util.spec_from_file_location("ckpt_kill_worker", HERE / "ckpt_kill_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KILLS = 24
KEEP = 3


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and POSIX rename semantics")
def test_sigkill_at_random_moments_never_loses_the_latest(tmp_path):
    worker = _load_worker_module()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    rng = random.Random(20240615)
    manager = CheckpointManager(tmp_path, keep=KEEP)
    restored_before, mid_write_kills = 0, 0
    deadline = time.monotonic() + 60
    for kill in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "ckpt_kill_worker.py"), str(tmp_path), str(KEEP)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            pytest.fail(f"worker did not start: {proc.communicate()[1]}")
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, f"worker died by itself: {err}"
        reported = [int(line) for line in out.split()]
        # A temp file on disk means the kill landed inside a write.
        mid_write_kills += any(".tmp-" in p.name for p in tmp_path.iterdir())

        fallbacks = []
        restored = manager.restore_latest(
            on_fallback=lambda p, e, seen=fallbacks: seen.append(str(e))
        )
        assert fallbacks == [], f"kill {kill}: a listed checkpoint was incomplete: {fallbacks}"
        if restored is None:
            assert not reported and restored_before == 0, f"kill {kill}: lost every checkpoint"
            continue
        step, tensors, metadata = restored
        assert step >= max(reported, default=0) and step >= restored_before, (kill, step, reported)
        expected = worker.tensors_for_step(step)
        assert tensors.keys() == expected.keys()
        for name in expected:
            assert tensors[name].dtype == expected[name].dtype and np.array_equal(
                tensors[name], expected[name]
            )
        assert metadata["global_step"] == str(step)
        listed = manager.list()
        assert listed[-1][0] == step and len(listed) <= KEEP, (kill, listed)
        for _, path in listed:
            load_file(path)  # every listed checkpoint is complete, not only the newest
        restored_before = step
        assert time.monotonic() < deadline, "the kill test is far slower than intended"
    assert restored_before > 0, "no worker ever completed a save; lengthen the delays"
    # Without this the test might pass only because every kill fell between saves.
    assert mid_write_kills > 0, "no kill landed inside a write"
