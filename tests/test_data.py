# tests/test_data.py: IDX reading/writing, read_data_sets, DataSet batching and resume,
# and the real MNIST files (marked realdata). Downloads are tested in test_download.py.
import gzip
import os
import pathlib
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistc import data, datasets, idx
from mnistc.errors import DataError

from conftest import import_or_skip
from idx_helpers import (
    MNIST_NAMES,
    fake_mnist,
    idx_bytes,
    images_idx,
    labels_idx,
    sha256_table,
    write_bytes,
    write_mnist_dir,
)

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(params=["gzip", "isal"])
def gzip_reader(request, monkeypatch):
    """Run the test once with each reader idx.py can inflate through: the standard
    library's gzip and, from the `gzip` extra, python-isal's igzip."""
    reader = gzip if request.param == "gzip" else import_or_skip("isal.igzip", "gzip")
    monkeypatch.setattr(idx, "gzip_reader", reader)
    return reader


def test_isal_is_the_reader_when_installed():
    try:
        from isal import igzip
    except ImportError:
        assert idx.gzip_reader is gzip
    else:
        assert idx.gzip_reader is igzip


def read_idx_images(path):
    """uint8 [N, rows*cols] from an images file, as the data sets hold them."""
    images = idx.read_images(path)
    return images.reshape(images.shape[0], -1)


def small_images(n=3, rows=28, cols=28, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, rows, cols), dtype=np.uint8)


def assert_data_error(excinfo, path, fragment):
    message = str(excinfo.value)
    assert str(path) in message
    assert fragment in message
    assert "\n" not in message


# ---------------------------------------------------------------- reading good files


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_images_and_labels(tmp_path, gz, gzip_reader):
    images = small_images(4, 5, 6)
    labels = np.array([0, 9, 3, 7], dtype=np.uint8)
    images_path = write_bytes(tmp_path / "images", images_idx(images), gz)
    labels_path = write_bytes(tmp_path / "labels", labels_idx(labels), gz)

    got_images = read_idx_images(images_path)
    assert got_images.dtype == np.uint8 and got_images.shape == (4, 30)
    assert got_images.flags.c_contiguous
    np.testing.assert_array_equal(got_images, images.reshape(4, 30))
    np.testing.assert_array_equal(idx.read_labels(labels_path, 10), labels)
    np.testing.assert_array_equal(idx.read(images_path), images)


def test_gzip_detected_by_content_not_name(tmp_path, gzip_reader):
    images = small_images(2, 3, 3)
    gz_without_suffix = write_bytes(tmp_path / "images-idx3-ubyte", images_idx(images), gz=True)
    raw_with_suffix = write_bytes(tmp_path / "images-idx3-ubyte.gz", images_idx(images), gz=False)
    np.testing.assert_array_equal(idx.read(gz_without_suffix), images)
    np.testing.assert_array_equal(idx.read(raw_with_suffix), images)


@pytest.mark.parametrize(
    "dtype, code", [("<i2", 0x0B), ("<i4", 0x0C), ("<f4", 0x0D), ("<f8", 0x0E), ("i1", 0x09)]
)
def test_read_idx_multibyte_types_are_big_endian_on_disk(tmp_path, dtype, code):
    values = np.array([[-2, 1.5 if "f" in dtype else 7], [3, -100]], dtype=dtype)
    path = write_bytes(
        tmp_path / "x.idx",
        idx_bytes(values.shape, values.astype(values.dtype.newbyteorder(">")).tobytes(), code),
    )
    got = idx.read(path)
    assert got.dtype == values.dtype.newbyteorder("=") and got.dtype.isnative
    np.testing.assert_array_equal(got, values)


# ---------------------------------------------------------------- broken files


def image_file(**changes):
    """Valid images IDX bytes (3 images of 2x2) unless `changes` breaks them."""
    dims = changes.get("dims", (3, 2, 2))
    payload = changes.get("payload", bytes(range(12)))
    return idx_bytes(dims, payload, changes.get("code", 0x08), changes.get("prefix", b"\0\0"))


BROKEN_IMAGE_FILES = {
    "bad magic (labels file)": (labels_idx(np.zeros(3)), "wrong magic number 2049"),
    "bad magic (nonzero prefix)": (image_file(prefix=b"PK"), "wrong magic number"),
    "empty file": (b"", "truncated header: expected 4 bytes, found 0"),
    "truncated magic": (b"\0\0\x08", "truncated header: expected 4 bytes, found 3"),
    "truncated dims": (image_file()[:9], "truncated header: expected 16 bytes, found 9"),
    "truncated body": (image_file()[:-5], "expected 12 bytes of data, found 7"),
    "trailing garbage": (image_file() + b"junk", "trailing garbage"),
    "zero items": (image_file(dims=(0, 2, 2), payload=b""), "contains no items"),
    "zero-size images": (image_file(dims=(3, 0, 2), payload=b""), "zero size"),
    "dims over the cap": (
        image_file(dims=(2**31, 28, 28), payload=b"\0" * 64),
        "more than the limit",
    ),
    "dims under the cap, body missing": (
        image_file(dims=(2**20, 32, 32), payload=b"\0" * 64),
        "found 64",
    ),
}


def read_images_expecting_error(path):
    """read_idx_images(path) must raise DataError; returns (excinfo, peak bytes traced)."""
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as excinfo:
            read_idx_images(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return excinfo, peak


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", list(BROKEN_IMAGE_FILES))
def test_broken_image_files_raise_data_error(tmp_path, case, gz):
    content, fragment = BROKEN_IMAGE_FILES[case]
    if gz and case == "dims under the cap, body missing":
        fragment = "more than a gzip file of this size plausibly holds"  # refused before reading
    path = write_bytes(tmp_path / "train-images-idx3-ubyte", content, gz)
    excinfo, peak = read_images_expecting_error(path)
    assert_data_error(excinfo, path, fragment)
    assert peak < 4 << 20, f"reading a broken file allocated {peak} bytes"


BROKEN_GENERIC_FILES = {
    "unknown dtype code": (
        idx_bytes((2,), b"ab", dtype_code=0x07),
        "unknown IDX data type code 0x07",
    ),
    "ndim 0": (b"\0\0\x08\0", "number of dimensions 0"),
    "ndim 5": (idx_bytes((1, 1, 1, 1, 1), b"a"), "number of dimensions 5"),
    "odd float body": (
        idx_bytes((2,), b"\0" * 7, dtype_code=0x0D),
        "expected 8 bytes of data, found 7",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_GENERIC_FILES))
def test_broken_generic_files_raise_data_error(tmp_path, case):
    content, fragment = BROKEN_GENERIC_FILES[case]
    path = write_bytes(tmp_path / "thing.idx", content)
    with pytest.raises(DataError) as excinfo:
        idx.read(path)
    assert_data_error(excinfo, path, fragment)


def test_label_out_of_range(tmp_path):
    labels = np.zeros(400, dtype=np.uint8)
    labels[345] = 12
    labels[399] = 200
    path = write_bytes(tmp_path / "train-labels-idx1-ubyte", labels_idx(labels))
    with pytest.raises(DataError) as excinfo:
        idx.read_labels(path, 10)
    assert_data_error(excinfo, path, "label 12 at index 345 is outside 0..9")
    assert idx.read_labels(path, num_classes=201)[399] == 200


def test_labels_reader_rejects_images_file(tmp_path):
    path = write_bytes(tmp_path / "t10k-labels-idx1-ubyte", images_idx(small_images(2, 2, 2)))
    with pytest.raises(DataError) as excinfo:
        idx.read_labels(path, 10)
    assert_data_error(excinfo, path, "wrong magic number 2051 (0x00000803), expected 2049")


def test_corrupt_gzip(tmp_path, gzip_reader):
    valid_header = gzip.compress(b"", mtime=0)[:10]
    path = write_bytes(
        tmp_path / "train-images-idx3-ubyte.gz", valid_header + b"\xff\xfe garbage deflate \x00" * 4
    )
    with pytest.raises(DataError) as excinfo:
        idx.read(path)
    assert_data_error(excinfo, path, "corrupt or truncated gzip")


def test_truncated_gzip(tmp_path, gzip_reader):
    compressed = gzip.compress(images_idx(small_images(50)), mtime=0)
    path = write_bytes(tmp_path / "train-images-idx3-ubyte.gz", compressed[: len(compressed) // 2])
    with pytest.raises(DataError) as excinfo:
        read_idx_images(path)
    assert_data_error(excinfo, path, "corrupt or truncated gzip")


def test_gzip_bomb_is_not_inflated(tmp_path, gzip_reader):
    # 12 bytes of body promised, 64 MiB of zeros delivered: stop after the first extra byte.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    stream = compressor.compress(image_file())
    for _ in range(64):
        stream += compressor.compress(bytes(1 << 20))
    path = write_bytes(tmp_path / "bomb.gz", stream + compressor.flush())
    excinfo, peak = read_images_expecting_error(path)
    assert_data_error(excinfo, path, "trailing garbage")
    assert peak < 4 << 20


def test_a_plausible_claim_with_no_body_allocates_by_the_compressed_size(tmp_path, gzip_reader):
    # 55 MB claimed (under GZIP_ALWAYS_ALLOWED, so it is read), a hundred bytes present.
    path = write_bytes(
        tmp_path / "train-images-idx3-ubyte.gz", image_file(dims=(70000, 28, 28)), True
    )
    excinfo, peak = read_images_expecting_error(path)
    assert_data_error(excinfo, path, "truncated data")
    assert peak < 4 << 20


@pytest.mark.parametrize("content", ["random", "zeros"])
def test_gzip_body_in_one_buffer_or_grown(tmp_path, gzip_reader, content):
    # Random pixels hardly compress: the body fits the buffer GZIP_LIKELY_RATIO times
    # the file's size. Zeros compress 1000:1: the buffer starts at a chunk and grows.
    images = small_images(3000) if content == "random" else np.zeros((3000, 28, 28), np.uint8)
    assert images.nbytes > 2 * idx.CHUNK_BYTES
    path = write_bytes(tmp_path / "train-images-idx3-ubyte.gz", images_idx(images), True)
    np.testing.assert_array_equal(idx.read_images(path), images)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_file(tmp_path, kind):
    path = tmp_path / "nothing-here"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(DataError) as excinfo:
        idx.read(path)
    assert_data_error(excinfo, path, "cannot read")


def mutations(valid):
    """Valid IDX bytes, then truncated, extended or with one byte changed."""
    return st.one_of(
        st.integers(0, len(valid)).map(lambda cut: valid[:cut]),
        st.binary(max_size=64).map(lambda extra: valid + extra),
        st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)).map(
            lambda change: valid[: change[0]] + bytes([change[1]]) + valid[change[0] + 1 :]
        ),
    )


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.one_of(
        st.binary(max_size=2000),
        mutations(image_file()),
        mutations(idx_bytes((2, 3), bytes(24), dtype_code=0x0C)),
    ),
    gz=st.booleans(),
)
def test_read_idx_returns_array_or_raises_data_error(tmp_path, content, gz, gzip_reader):
    path = write_bytes(tmp_path / "fuzz.idx", content, gz)
    try:
        array = idx.read(path)
    except DataError as error:
        assert str(path) in str(error)
    else:
        assert isinstance(array, np.ndarray) and 1 <= array.ndim <= 4


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.binary(max_size=2000).map(lambda b: gzip.compress(b, mtime=0)),
    cut=st.integers(0, 2100),
)
def test_read_idx_on_damaged_gzip_returns_array_or_raises_data_error(
    tmp_path, content, cut, gzip_reader
):
    path = write_bytes(tmp_path / "fuzz.gz", content[:cut] + content[cut + 1 :])
    try:
        idx.read(path)
    except DataError as error:
        assert str(path) in str(error)


# ---------------------------------------------------------------- writing


@pytest.mark.parametrize("name, expect_gzip", [("a.idx", False), ("a.idx.gz", True)])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_write_idx_round_trip(tmp_path, name, expect_gzip, dtype):
    array = (np.arange(24).reshape(2, 3, 4) * 7 - 50).astype(dtype)
    path = tmp_path / name
    idx.write(path, array)
    on_disk = path.read_bytes()
    assert (on_disk[:2] == b"\x1f\x8b") == expect_gzip
    raw = gzip.decompress(on_disk) if expect_gzip else on_disk
    code = {
        np.uint8: 0x08,
        np.int8: 0x09,
        np.int16: 0x0B,
        np.int32: 0x0C,
        np.float32: 0x0D,
        np.float64: 0x0E,
    }[dtype]
    assert raw == idx_bytes(
        (2, 3, 4), array.astype(np.dtype(dtype).newbyteorder(">")).tobytes(), code
    )
    got = idx.read(path)
    assert got.dtype == array.dtype
    np.testing.assert_array_equal(got, array)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_write_idx_compress_overrides_name(tmp_path):
    idx.write(tmp_path / "plain", np.ones(3, np.uint8), compress=True)
    idx.write(tmp_path / "plain.gz", np.ones(3, np.uint8), compress=False)
    assert (tmp_path / "plain").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "plain.gz").read_bytes() == idx_bytes((3,), b"\1\1\1")


def test_write_idx_rejects_bad_arrays_and_leaves_no_file(tmp_path):
    with pytest.raises(TypeError):
        idx.write(tmp_path / "a.idx", np.ones(3, np.uint64))
    with pytest.raises(ValueError):
        idx.write(tmp_path / "a.idx", np.ones((1,) * 5, np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_write_idx_replaces_atomically(tmp_path):
    path = tmp_path / "a.idx"
    idx.write(path, np.zeros(4, np.uint8))
    idx.write(path, np.full(2, 9, np.uint8))
    np.testing.assert_array_equal(idx.read(path), [9, 9])
    assert [p.name for p in tmp_path.iterdir()] == ["a.idx"]


# ---------------------------------------------------------------- read_data_sets on tiny folders


def test_read_data_sets_splits_in_file_order(tmp_path):
    files = fake_mnist(n_train=12, n_test=5)
    write_mnist_dir(tmp_path, files)
    rng = np.random.default_rng(0)
    sets = data.read_data_sets(tmp_path, validation_size=2, rng=rng, download=False)
    train_images = read_idx_images(tmp_path / f"{MNIST_NAMES['train_images']}.gz")
    assert (sets.train.num_examples, sets.validation.num_examples, sets.test.num_examples) == (
        10,
        2,
        5,
    )
    np.testing.assert_array_equal(sets.validation.images, train_images[:2])
    np.testing.assert_array_equal(sets.train.images, train_images[2:])
    np.testing.assert_array_equal(sets.train.labels, np.arange(2, 12) % 10)
    np.testing.assert_array_equal(sets.test.labels, (np.arange(5) + 3) % 10)
    for subset in sets:
        assert subset.images.dtype == np.uint8 and subset.images.flags.c_contiguous
        assert (
            subset.images.shape[1] == datasets.MNIST.image_pixels
            and subset.labels.dtype == np.uint8
        )
        assert subset._rng is rng


def test_read_data_sets_prefers_raw_over_gz(tmp_path):
    write_mnist_dir(tmp_path, fake_mnist(seed=0), gz=True)
    raw = fake_mnist(seed=1)
    name = MNIST_NAMES["test_images"]
    write_bytes(tmp_path / name, raw[name])
    sets = data.read_data_sets(tmp_path, validation_size=2, download=False)
    np.testing.assert_array_equal(sets.test.images, read_idx_images(tmp_path / name))


def test_read_data_sets_count_mismatch_names_both_files(tmp_path):
    files = fake_mnist(n_train=12)
    files[MNIST_NAMES["train_labels"]] = labels_idx(np.arange(11) % 10)
    write_mnist_dir(tmp_path, files)
    with pytest.raises(DataError) as excinfo:
        data.read_data_sets(tmp_path, validation_size=2, download=False)
    message = str(excinfo.value)
    assert "12 images" in message and "11 labels" in message
    assert MNIST_NAMES["train_images"] in message and MNIST_NAMES["train_labels"] in message


def test_read_data_sets_requires_28x28(tmp_path):
    files = fake_mnist()
    files[MNIST_NAMES["test_images"]] = images_idx(small_images(5, 28, 27))
    write_mnist_dir(tmp_path, files)
    with pytest.raises(DataError, match="28x27, expected 28x28"):
        data.read_data_sets(tmp_path, validation_size=2, download=False)


@pytest.mark.parametrize("validation_size", [-1, 13])
def test_read_data_sets_validation_size_out_of_range(tmp_path, validation_size):
    write_mnist_dir(tmp_path, fake_mnist(n_train=12))
    with pytest.raises(ValueError, match=r"--validation-size must be in 0\.\.12"):
        data.read_data_sets(tmp_path, validation_size=validation_size, download=False)


def test_read_data_sets_validation_size_all_or_nothing(tmp_path):
    write_mnist_dir(tmp_path, fake_mnist(n_train=12))
    assert (
        data.read_data_sets(tmp_path, validation_size=0, download=False).validation.num_examples
        == 0
    )
    assert data.read_data_sets(tmp_path, validation_size=12, download=False).train.num_examples == 0


def test_read_data_sets_missing_files_without_download(tmp_path):
    files = fake_mnist()
    del files[MNIST_NAMES["test_labels"]]
    write_mnist_dir(tmp_path, files)
    with pytest.raises(DataError) as excinfo:
        data.read_data_sets(tmp_path, download=False)
    assert_data_error(excinfo, tmp_path, MNIST_NAMES["test_labels"])
    assert "--data-dir" in str(excinfo.value) and MNIST_NAMES["test_images"] not in str(
        excinfo.value
    )


def test_verify_checksums(tmp_path):
    files = fake_mnist()
    write_mnist_dir(tmp_path, files)
    checksums = sha256_table(files)
    datasets.verify_checksums(datasets.MNIST._replace(sha256=checksums), tmp_path)
    checksums[MNIST_NAMES["train_labels"]] = "0" * 64
    with pytest.raises(DataError) as excinfo:
        datasets.verify_checksums(datasets.MNIST._replace(sha256=checksums), tmp_path)
    assert_data_error(excinfo, tmp_path / f"{MNIST_NAMES['train_labels']}.gz", "SHA-256")


def test_fake_data():
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    sets = data.read_data_sets(fake_data=True, rng=rng)
    for subset in sets:
        assert subset.num_examples == 10000
        assert subset.images.shape == (10000, 784) and (subset.images == 255).all()
        assert (subset.labels == 0).all()
    assert rng.bit_generator.state == state  # creating data sets draws no randomness
    images, labels = sets.train.next_batch(100)
    assert (images == 1.0).all() and images.dtype == np.float32
    assert (labels == 0).all() and labels.dtype == np.int32


# ---------------------------------------------------------------- resolve_data_dir


def test_resolve_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MNISTC_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.resolve_data_dir(datasets.MNIST) == (
        tmp_path / "xdg" / "mnistc" / "mnist",
        True,
    )

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.resolve_data_dir(datasets.MNIST) == (
        tmp_path / "home" / ".cache" / "mnistc" / "mnist",
        True,
    )

    (tmp_path / "data" / "mnist").mkdir(parents=True)
    assert datasets.resolve_data_dir(datasets.MNIST) == (pathlib.Path("data", "mnist"), False)

    monkeypatch.setenv("MNISTC_DATA_DIR", str(tmp_path / "env"))
    assert datasets.resolve_data_dir(datasets.MNIST) == (tmp_path / "env", True)
    assert datasets.resolve_data_dir(datasets.MNIST, tmp_path / "arg") == (tmp_path / "arg", True)


# ---------------------------------------------------------------- DataSet


def make_dataset(n, seed=0):
    images = (np.arange(n * 784) % 256).astype(np.uint8).reshape(n, 784)
    return data.DataSet(images, (np.arange(n) % 10).astype(np.uint8), np.random.default_rng(seed))


def test_each_epoch_covers_every_example_once():
    dataset = make_dataset(100)
    for epoch in range(3):
        assert dataset.epochs_completed == epoch
        seen = np.concatenate([dataset.next_batch_indices(20) for _ in range(5)])
        assert seen.dtype == np.int32
        np.testing.assert_array_equal(np.sort(seen), np.arange(100))
    assert dataset.epochs_completed == 3


def test_first_epoch_is_shuffled_and_drawn_lazily():
    dataset = make_dataset(1000)
    assert dataset._rng.bit_generator.state == np.random.default_rng(0).bit_generator.state
    assert dataset.permutation.size == 0 and dataset.permutation.dtype == np.int32
    first = dataset.next_batch_indices(1000)
    assert not np.array_equal(first, np.arange(1000))
    np.testing.assert_array_equal(first, np.random.default_rng(0).permutation(1000))


def test_straddling_batch_is_old_tail_then_new_head():
    dataset = make_dataset(10, seed=5)
    reference = np.random.default_rng(5)
    first, second = reference.permutation(10), reference.permutation(10)
    batches = [dataset.next_batch_indices(4) for _ in range(3)]
    np.testing.assert_array_equal(batches[0], first[:4])
    np.testing.assert_array_equal(batches[1], first[4:8])
    np.testing.assert_array_equal(batches[2], np.concatenate([first[8:], second[:2]]))
    assert dataset.epochs_completed == 1
    assert dataset.get_state() == {"epochs_completed": 1, "index_in_epoch": 2}
    np.testing.assert_array_equal(dataset.permutation, second)


def test_returned_indices_are_owned_by_the_caller():
    dataset = make_dataset(10)
    batch = dataset.next_batch_indices(5)
    order = dataset.permutation.copy()
    batch[:] = 0
    np.testing.assert_array_equal(dataset.permutation, order)
    np.testing.assert_array_equal(dataset.next_batch_indices(5), order[5:])
    with pytest.raises(ValueError):
        dataset.permutation[0] = 1


def test_same_seed_same_batches():
    a, b = make_dataset(50, seed=9), make_dataset(50, seed=9)
    for _ in range(20):
        np.testing.assert_array_equal(a.next_batch_indices(7), b.next_batch_indices(7))
    assert not np.array_equal(
        make_dataset(50, seed=10).next_batch_indices(7),
        make_dataset(50, seed=9).next_batch_indices(7),
    )


@pytest.mark.parametrize("steps_before_save", [0, 1, 3, 4, 5, 9])
def test_get_state_set_state_resumes_exactly(steps_before_save):
    original = make_dataset(23, seed=4)
    for _ in range(steps_before_save):
        original.next_batch_indices(5)
    state, permutation = original.get_state(), original.permutation.copy()
    rng_state = original._rng.bit_generator.state

    rng = np.random.default_rng(999)
    rng.bit_generator.state = rng_state
    resumed = data.DataSet(original.images, original.labels, rng)
    resumed.set_state(state, permutation)
    for _ in range(12):  # crosses at least two epoch boundaries
        np.testing.assert_array_equal(resumed.next_batch_indices(5), original.next_batch_indices(5))
    assert resumed.get_state() == original.get_state()


def test_state_is_json_scalars():
    dataset = make_dataset(10)
    assert dataset.get_state() == {"epochs_completed": 0, "index_in_epoch": 0}
    dataset.next_batch_indices(3)
    state = dataset.get_state()
    assert all(type(value) is int for value in state.values())


@pytest.mark.parametrize(
    "state, permutation, fragment",
    [
        ({"epochs_completed": 0, "index_in_epoch": 0}, np.arange(9), "9 entries"),
        ({"epochs_completed": 0, "index_in_epoch": 0}, np.zeros(10, np.int32), "not a permutation"),
        ({"epochs_completed": 0, "index_in_epoch": 10}, np.arange(10), "out of range"),
        ({"epochs_completed": -1, "index_in_epoch": 0}, np.arange(10), "out of range"),
        ({"epochs_completed": 1, "index_in_epoch": 3}, np.empty(0, np.int32), "no permutation"),
        ({"epochs_completed": 0}, np.arange(10), "lacks"),
        ({"epochs_completed": 0.5, "index_in_epoch": 0}, np.arange(10), "integers"),
        ({"epochs_completed": 0, "index_in_epoch": 0}, np.arange(10.0), "integer array"),
    ],
)
def test_set_state_rejects_mismatches(state, permutation, fragment):
    with pytest.raises(DataError, match=fragment):
        make_dataset(10).set_state(state, permutation)


def test_set_state_accepts_the_initial_state():
    dataset = make_dataset(10, seed=2)
    dataset.set_state({"epochs_completed": 0, "index_in_epoch": 0}, np.empty(0, np.int32))
    np.testing.assert_array_equal(
        dataset.next_batch_indices(10), make_dataset(10, seed=2).next_batch_indices(10)
    )


def test_next_batch_scaling_is_bit_exact():
    dataset, twin = make_dataset(30, seed=6), make_dataset(30, seed=6)
    assert set(np.unique(dataset.images)) == set(range(256))
    for _ in range(4):
        images, labels = dataset.next_batch(13)
        rows = twin.next_batch_indices(13)
        assert images.dtype == np.float32 and images.shape == (13, 784)
        assert labels.dtype == np.int32 and labels.shape == (13,)
        assert 0.0 <= images.min() and images.max() <= 1.0
        # uint8 * float32(1/255) differs from uint8 / 255 in 126 of the 256 values
        expected = dataset.images[rows].astype(np.float32) * np.float32(1.0 / 255.0)
        assert expected.tobytes() == images.tobytes()
        np.testing.assert_array_equal(labels, dataset.labels[rows])


@pytest.mark.parametrize("batch_size", [0, -1, 11])
def test_batch_size_out_of_range(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(10).next_batch_indices(batch_size)


def test_dataset_rejects_wrong_arrays():
    with pytest.raises(TypeError):
        data.DataSet(np.zeros((3, 784), np.float32), np.zeros(3, np.uint8))
    with pytest.raises(ValueError):
        data.DataSet(np.zeros((3, 784), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(ValueError):
        data.DataSet(np.zeros((784, 3), np.uint8).T, np.zeros(3, np.uint8))


# ---------------------------------------------------------------- the real files


def real_data_dir():
    directory = pathlib.Path(os.environ.get("MNISTC_DATA_DIR") or REPO / "data" / "mnist")
    if all(
        (directory / name).is_file() or (directory / f"{name}.gz").is_file()
        for name in datasets.MNIST.files.values()
    ):
        return directory
    message = f"real MNIST files not found in {directory} (set MNISTC_DATA_DIR)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.realdata
def test_real_mnist():
    sets = data.read_data_sets(real_data_dir(), download=False, rng=np.random.default_rng(0))
    assert (sets.train.num_examples, sets.validation.num_examples, sets.test.num_examples) == (
        55000,
        5000,
        10000,
    )
    assert sets.train.images.shape == (55000, 784) and sets.train.images.dtype == np.uint8
    np.testing.assert_array_equal(sets.validation.labels[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(sets.test.labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    train_counts = np.bincount(
        np.concatenate([sets.validation.labels, sets.train.labels]), minlength=10
    )
    np.testing.assert_array_equal(
        train_counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    test_counts = np.bincount(sets.test.labels, minlength=10)
    np.testing.assert_array_equal(
        test_counts, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )


@pytest.mark.realdata
def test_real_mnist_checksums(gzip_reader):
    datasets.verify_checksums(datasets.MNIST, real_data_dir())
