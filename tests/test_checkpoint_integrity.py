"""What the checksum and the metadata checks of a training checkpoint cover, on checkpoints
a real run wrote: an edited byte anywhere in the header is detected, a checkpoint whose
metadata is valid JSON but does not fit its tensors (or holds NaN weights) is skipped for
the previous one with a warning, and nothing a header says makes a tool allocate more
than the file holds. The property tests mutate the header's bytes at random."""

import json
import math
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mnistc.checkpoint import load_file, save_file

from conftest import run_tool, run_tool_measured

SMALL = ["--fake-data", "--hidden", "16,8", "--batch-size", "20", "--no-tensorboard"]
PEAK_RSS = 400 << 20  # a tool reading these checkpoints needs ~100 MB; an edit asked TBs


@pytest.fixture(scope="module")
def run_200(tmp_path_factory):
    """A fake-data run's folder with checkpoints at steps 100 and 200."""
    train_dir = tmp_path_factory.mktemp("run_200")
    result = run_tool(
        "train",
        *SMALL,
        "--max-steps",
        200,
        "--checkpoint-every",
        100,
        "--quiet",
        "--train-dir",
        train_dir,
    )
    assert result.returncode == 0, result.stderr
    return train_dir


@pytest.fixture
def run_dir(run_200, tmp_path):
    """A copy of run_200 to damage."""
    return Path(shutil.copytree(run_200, tmp_path / "run"))


def split(raw):
    """(header JSON bytes, data bytes) of a checkpoint file's content."""
    (length,) = struct.unpack("<Q", raw[:8])
    return raw[8 : 8 + length], raw[8 + length :]


def join(header, data):
    return struct.pack("<Q", len(header)) + header + data


def edit_header(path, old, new):
    """Replace `old` by `new` (bytes, JSON as stored: the metadata values are strings, so
    JSON inside them has escaped quotes) once in the file's header, keeping the layout
    valid (the length field follows): what an edit by hand or by a script does."""
    header, data = split(path.read_bytes())
    assert header.count(old) == 1, (old, header)
    path.write_bytes(join(header.replace(old, new), data))


def resign(path, change):
    """Rewrite the checkpoint with `change(tensors, metadata)` applied, through save_file:
    a structurally valid file with a correct checksum, whatever the edit means."""
    tensors, metadata = load_file(path)
    change(tensors, metadata)
    save_file(path, tensors, metadata)


def fell_back(stderr, skipped, *reasons):
    """The one warning line about skipping `skipped`, naming the reasons."""
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: skipping")]
    assert len(warnings) == 1, stderr
    assert str(skipped) in warnings[0] and "falling back" in warnings[0], warnings[0]
    for reason in reasons:
        assert reason in warnings[0], warnings[0]


# ----------------------------------------------------------------------------------
# Edits by hand: detected by the checksum


def test_an_edited_global_step_is_detected_and_resume_falls_back(run_dir):
    edit_header(
        run_dir / "checkpoint-200.safetensors", b'"global_step":"200"', b'"global_step":"280"'
    )
    result = run_tool("train", *SMALL, "--max-steps", 300, "--resume", "--train-dir", run_dir)
    assert result.returncode == 0, result.stderr
    fell_back(result.stderr, run_dir / "checkpoint-200.safetensors")
    assert result.stdout.startswith(
        f"Resuming from {run_dir / 'checkpoint-100.safetensors'} (step 100)\n"
    )


@pytest.mark.parametrize(
    "old, new",
    [
        (rb"\"index_in_epoch\": 4000", rb"\"index_in_epoch\": 4020"),
        (rb"\"validation\": 1.0", rb"\"validation\": 0.5"),  # in last_eval
        (b'"learning_rate":"0.01"', b'"learning_rate":"0.02"'),
    ],
)
def test_an_edit_that_means_something_else_is_a_checksum_mismatch(run_dir, old, new):
    """Values no consistency check can doubt: only the checksum over the header sees them."""
    edit_header(run_dir / "checkpoint-200.safetensors", old, new)
    result = run_tool("eval", "--train-dir", run_dir, "--fake-data", "--json")
    assert result.returncode == 0, result.stderr
    fell_back(result.stderr, run_dir / "checkpoint-200.safetensors", "checksum mismatch")
    assert json.loads(result.stdout)["global_step"] == 100


@pytest.mark.parametrize(
    "old, new",
    [
        (rb"\"batch_size\": 20", rb"\"batch_size\": 2000000000"),
        (b'"sizes":"[784, 16, 8, 10]"', b'"sizes":"[784, 100000, 8, 10]"'),
    ],
    ids=["batch_size", "sizes"],
)
@pytest.mark.parametrize("tool", ["eval", "predict"])
def test_an_edited_size_falls_back_without_a_huge_allocation(run_dir, tmp_path, tool, old, new):
    edit_header(run_dir / "checkpoint-200.safetensors", old, new)
    image = tmp_path / "digit.pgm"
    image.write_bytes(b"P5\n28 28\n255\n" + bytes(784))
    args = ["--fake-data", "--json"] if tool == "eval" else [image]
    result, peak = run_tool_measured(tool, "--train-dir", run_dir, *args)
    assert result.returncode == 0, result.stderr
    fell_back(result.stderr, run_dir / "checkpoint-200.safetensors")
    if tool == "eval":
        assert json.loads(result.stdout)["global_step"] == 100
    assert peak < PEAK_RSS, f"peak RSS {peak >> 20} MiB"


def test_load_falls_back_past_an_edited_header(run_dir, capsys):
    import mnistc

    edit_header(
        run_dir / "checkpoint-200.safetensors",
        rb"\"batch_size\": 20",
        rb"\"batch_size\": 2000000000",
    )
    model = mnistc.load(run_dir)
    assert model.global_step == 100 and model.batch_size == 20
    fell_back(capsys.readouterr().err, run_dir / "checkpoint-200.safetensors", "batch_size")


# ----------------------------------------------------------------------------------
# Valid checksums, inconsistent content: skipped for the previous checkpoint


def _set_run(key, value):
    def change(tensors, metadata):
        run = json.loads(metadata["run"])
        run[key] = value
        metadata["run"] = json.dumps(run)

    return change


INCONSISTENT = {
    "hidden-vs-sizes": (_set_run("hidden", [16, 9]), ['"run" has hidden [16, 9]']),
    "sizes-vs-tensors": (
        lambda t, m: m.update(sizes="[784, 16, 9, 10]"),
        ["hidden2/weights", "[784, 16, 9, 10]"],
    ),
    "batch-size-absurd": (_set_run("batch_size", 2**40), ['"run" batch_size']),
    "step-vs-name": (lambda t, m: m.update(global_step="280"), ["global_step 280", "step 200"]),
    "rng-state": (lambda t, m: m.update(rng_state='{"bit_generator": "MT19937"}'), ["rng_state"]),
    "nan-weights": (
        lambda t, m: t["hidden2/weights"].__setitem__((0, 0), np.nan),
        ["hidden2/weights", "NaN"],
    ),
}


@pytest.mark.parametrize("case", list(INCONSISTENT))
def test_an_inconsistent_checkpoint_is_skipped_with_a_warning(run_dir, case):
    change, reasons = INCONSISTENT[case]
    resign(run_dir / "checkpoint-200.safetensors", change)
    result, peak = run_tool_measured("eval", "--train-dir", run_dir, "--fake-data", "--json")
    assert result.returncode == 0, result.stderr
    fell_back(result.stderr, run_dir / "checkpoint-200.safetensors", *reasons)
    assert json.loads(result.stdout)["global_step"] == 100
    assert peak < PEAK_RSS, f"peak RSS {peak >> 20} MiB"


def test_the_nan_stop_names_the_checkpoint_it_really_kept(run_dir):
    """A NaN-weight checkpoint-200 is skipped on resume; when the loss then blows up, the
    checkpoint the message calls good is step 100, the one restored."""
    resign(run_dir / "checkpoint-200.safetensors", INCONSISTENT["nan-weights"][0])
    result = run_tool(
        "train",
        *SMALL,
        "--max-steps",
        2000,
        "--learning-rate",
        1e30,
        "--resume",
        "--train-dir",
        run_dir,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    fell_back(result.stderr, run_dir / "checkpoint-200.safetensors", "NaN")
    error = result.stderr.strip().splitlines()[-1]
    assert "loss became nan at step 10" in error, error  # at once, from step 100 on
    assert "the last good checkpoint is step 100" in error, error


# ----------------------------------------------------------------------------------
# Property: any change to the header's bytes is caught, or changes nothing


def _restore(directory):
    """(step, tensors, meta header, fallbacks) as the tools restore a train dir."""
    from mnistc.metadata import restore_latest

    fallbacks = []
    tensors, meta = restore_latest(directory, on_fallback=lambda p, e: fallbacks.append(p.name))
    return meta.global_step, tensors, meta.to_header(), fallbacks


@pytest.fixture(scope="module")
def originals(run_200):
    """{step: (file bytes, tensors, meta header)} of run_200's checkpoints."""
    from mnistc.metadata import load_checkpoint

    found = {}
    for step in (100, 200):
        path = run_200 / f"checkpoint-{step}.safetensors"
        tensors, meta = load_checkpoint(path)
        found[step] = (path.read_bytes(), tensors, meta.to_header())
    return found


def assert_restored(directory, originals):
    """The newest checkpoint as it was, or (with one fallback warning) the previous one."""
    step, tensors, header, fallbacks = _restore(directory)
    assert fallbacks == ([] if step == 200 else ["checkpoint-200.safetensors"])
    assert step in (100, 200)
    _, want_tensors, want_header = originals[step]
    assert header == want_header
    assert tensors.keys() == want_tensors.keys()
    for name in tensors:
        assert tensors[name].tobytes() == want_tensors[name].tobytes(), name
    return step


def header_mutations():
    """Changes to the first 8 + N bytes of a file (length field and JSON header): bytes
    overwritten, or a slice of the JSON replaced by other bytes with the length field
    following (so the layout stays parseable and the checksum has to catch it)."""
    overwrite = st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8
    ).map(lambda edits: ("overwrite", edits))
    splice = st.tuples(
        st.floats(0, 1, exclude_max=True),
        st.integers(0, 12),
        st.binary(max_size=12)
        | st.sampled_from(
            [
                b"0",
                b"1",
                b"9",
                b'"',
                b"\\",
                b" ",
                b"null",
                b"[]",
                b"{}",
                b"-1",
                b"1e999",
                b"\\u0000",
                b'"x"',
            ]
        ),
    ).map(lambda edit: ("splice", edit))
    return overwrite | splice


def apply_mutation(raw, mutation):
    kind, edit = mutation
    header, data = split(raw)
    if kind == "overwrite":
        region = bytearray(raw[: 8 + len(header)])
        for where, value in edit:
            region[int(where * len(region))] = value
        return bytes(region) + data
    where, length, replacement = edit
    at = int(where * len(header))
    return join(header[:at] + replacement + header[at + length :], data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=header_mutations())
def test_header_mutations_are_rejected_or_change_nothing(originals, mutation):
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        (directory / "checkpoint-100.safetensors").write_bytes(originals[100][0])
        mutated = apply_mutation(originals[200][0], mutation)
        (directory / "checkpoint-200.safetensors").write_bytes(mutated)
        step = assert_restored(directory, originals)
        event(f"restored step {step}")
        if mutated != originals[200][0]:
            assert step == 100, "an edited header was accepted"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=8)
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(
        [
            "global_step",
            "sizes",
            "run",
            "class_names",
            "optimizer",
            "optimizer_step",
            "schedule",
            "epochs",
            "rng_state",
            "data_state",
            "last_eval",
            "metadata_version",
            "learning_rate",
        ]
    ),
    value=JSON_VALUES,
    as_text=st.booleans(),
    subkey=st.text(max_size=12),
)
def test_resigned_metadata_is_rejected_or_consistent(originals, key, value, as_text, subkey):
    """Metadata rewritten with a valid checksum (as a buggy or foreign writer would):
    either the checkpoint is skipped for the previous one, or it loads, restores the
    original tensors and builds a model of the recorded shape — never another exception
    or an allocation beyond the file's size."""
    import tracemalloc

    import mnistc

    tensors, metadata = load_file_bytes(originals[200][0])
    if as_text:
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    else:  # one field inside a JSON object (e.g. "run"'s batch_size)
        inner = json.loads(metadata[key]) if metadata[key].startswith("{") else {}
        inner[subkey or "batch_size"] = value
        metadata[key] = json.dumps(inner)
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        (directory / "checkpoint-100.safetensors").write_bytes(originals[100][0])
        save_file(directory / "checkpoint-200.safetensors", tensors, metadata)
        tracemalloc.start()
        try:
            step, restored, _, fallbacks = _restore(directory)
            model = mnistc.load(directory, on_fallback=lambda p, e: None)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    event(f"restored step {step}")
    assert peak < 16 << 20, f"{peak} bytes traced"
    assert step in (100, 200) and model.global_step == step
    assert fallbacks == ([] if step == 200 else ["checkpoint-200.safetensors"])
    for name, want in originals[step][1].items():
        assert restored[name].tobytes() == want.tobytes(), name
    assert model.sizes == (784, 16, 8, 10)
    assert all(math.isfinite(float(v.sum())) for v in model.params.values())


def load_file_bytes(raw):
    """load_file of a checkpoint's bytes (through a temporary file)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.safetensors"
        path.write_bytes(raw)
        return load_file(path)
