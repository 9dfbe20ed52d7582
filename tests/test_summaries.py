"""Summaries for plotting: the JSON-lines log is always written; with tensorboardX
installed the train dir also gets TensorBoard event files, read back here with
TensorBoard's own reader."""
import json
import os

import pytest

from mnistc.train import TrainConfig, run_training


def needs(module):
    """Import an optional test dependency: skip where it is absent, fail in CI."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is not installed (it is in the test extra)")
        pytest.skip(f"{module} is not installed")


def test_event_file_holds_the_loss_and_precisions(tmp_path):
    needs("tensorboardX")
    accumulator = needs("tensorboard.backend.event_processing.event_accumulator")
    run_training(TrainConfig(fake_data=True, hidden=(16, 8), batch_size=20, max_steps=250,
                             checkpoint_every=200, train_dir=str(tmp_path), quiet=True))
    assert list(tmp_path.glob("events.out.tfevents.*")), "no event file written"

    events = accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert set(scalars) == {"loss", "precision/train", "precision/validation",
                            "precision/test"}
    logged = [json.loads(line) for line in (tmp_path / "summaries.jsonl").read_text().splitlines()]
    for tag in scalars:
        from_events = [(e.step, e.value) for e in events.Scalars(tag)]
        from_log = [(r["step"], r["value"]) for r in logged if r["tag"] == tag]
        assert [s for s, _ in from_events] == [s for s, _ in from_log], tag
        for (_, got), (_, want) in zip(from_events, from_log):
            assert got == pytest.approx(want, rel=1e-6), tag  # stored as float32
    assert [e.step for e in events.Scalars("loss")] == [0, 100, 200]
    assert [e.step for e in events.Scalars("precision/test")] == [199, 249]
    assert events.Scalars("precision/test")[-1].value == 1.0


def test_no_event_files_when_disabled(tmp_path):
    run_training(TrainConfig(fake_data=True, hidden=(8, 4), batch_size=10, max_steps=3,
                             train_dir=str(tmp_path), quiet=True, tensorboard=False))
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    assert (tmp_path / "summaries.jsonl").exists()
