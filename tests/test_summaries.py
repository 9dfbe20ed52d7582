"""Summaries for plotting: the JSON-lines log and TensorBoard event files (mnistc writes
them itself), read back here with TensorBoard's own reader."""

import json
import math
import os
import struct

import pytest

from mnistc import events as ev
from mnistc.config import TrainConfig
from mnistc.training import run_training


def needs(module):
    """Import an optional test dependency: skip where it is absent, fail in CI."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is not installed (it is in the test extra)")
        pytest.skip(f"{module} is not installed")


def test_event_file_holds_the_loss_and_precisions(tmp_path):
    accumulator = needs("tensorboard.backend.event_processing.event_accumulator")
    summary = run_training(
        TrainConfig(
            fake_data=True,
            hidden=(16, 8),
            batch_size=20,
            max_steps=250,
            checkpoint_every=200,
            train_dir=str(tmp_path),
            quiet=True,
        )
    )
    assert list(tmp_path.glob("events.out.tfevents.*")), "no event file written"

    events = accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert set(scalars) == {
        "loss",
        "learning_rate",
        "precision/train",
        "precision/validation",
        "precision/test",
    }
    logged = [json.loads(line) for line in (tmp_path / "summaries.jsonl").read_text().splitlines()]
    for tag in scalars:
        from_events = [(e.step, e.value) for e in events.Scalars(tag)]
        from_log = [(r["step"], r["value"]) for r in logged if r["tag"] == tag]
        assert [s for s, _ in from_events] == [s for s, _ in from_log], tag
        for (_, got), (_, want) in zip(from_events, from_log):
            assert got == pytest.approx(want, rel=1e-6), tag  # stored as float32
    assert [e.step for e in events.Scalars("loss")] == [0, 100, 200]
    assert [e.step for e in events.Scalars("precision/test")] == [199, 249]
    for split in ("train", "validation", "test"):  # the values summary.json reports
        assert events.Scalars(f"precision/{split}")[-1].value == pytest.approx(
            summary["precision"][split], rel=1e-6
        )


def test_no_event_files_when_disabled(tmp_path):
    run_training(
        TrainConfig(
            fake_data=True,
            hidden=(8, 4),
            batch_size=10,
            max_steps=3,
            train_dir=str(tmp_path),
            quiet=True,
            tensorboard=False,
        )
    )
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    assert (tmp_path / "summaries.jsonl").exists()


def test_crc32c_matches_the_published_check_values():
    # RFC 3720 (iSCSI), appendix B.4, and the CRC catalogue's check value.
    assert ev.crc32c(b"123456789") == 0xE3069283
    assert ev.crc32c(bytes(32)) == 0x8A9136AA
    assert ev.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert ev.crc32c(bytes(range(32))) == 0x46DD794E


def test_tfrecord_framing_and_a_torn_last_record(tmp_path):
    record = ev.tfrecord(b"payload")
    (length,) = struct.unpack("<Q", record[:8])
    assert length == 7 and record[12:19] == b"payload" and len(record) == 8 + 4 + 7 + 4
    # TensorBoard's reader skips a record cut short by a kill instead of failing.
    accumulator = needs("tensorboard.backend.event_processing.event_accumulator")
    writer = ev.EventWriter(str(tmp_path))
    writer.add_scalar("loss", 2.5, 0)
    writer.close()
    with open(writer.path, "ab") as f:
        f.write(ev.tfrecord(b"\x08\x01")[:10])
    events = accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(0, 2.5)]


def test_resumed_writer_hides_the_steps_it_redoes(tmp_path):
    accumulator = needs("tensorboard.backend.event_processing.event_accumulator")
    first = ev.EventWriter(str(tmp_path))
    for step in (0, 100, 200, 300):
        first.add_scalar("loss", float(step), step)
    first.close()
    resumed = ev.EventWriter(str(tmp_path), purge_step=200)
    resumed.add_scalar("loss", -1.0, 200)
    resumed.add_scalar("huge", 1e39, 200)  # beyond float32: stored as infinity
    resumed.close()
    events = accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [
        (0, 0.0),
        (100, 100.0),
        (200, -1.0),
    ]
    assert events.Scalars("huge")[0].value == math.inf
