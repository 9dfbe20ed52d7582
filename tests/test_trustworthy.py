"""What mnistc promises beyond the tutorial, shown on real training runs: bit-identical
results for any thread count, exact resume, and no lost work when the process is killed
at any moment (checkpoint writes included)."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mnistc.checkpoint import CheckpointManager, load_file
from mnistc.config import TrainConfig
from mnistc.training import run_training

TIMING = re.compile(r" \(\d+\.\d+ sec\)$")


def final_tensors(train_dir):
    step, tensors, _ = CheckpointManager(train_dir).restore_latest()
    return step, tensors


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), f"{name} differs"


def summaries(train_dir):
    lines = (train_dir / "summaries.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.realdata
@pytest.mark.parametrize("recipe", ["tutorial", "fast"])
def test_parameters_are_bit_identical_for_1_2_and_3_threads(real_mnist_dir, tmp_path, recipe):
    results = {}
    for threads in (1, 2, 3):
        run_dir = tmp_path / f"t{threads}"
        summary = run_training(
            TrainConfig.from_recipe(
                recipe,
                data_dir=str(real_mnist_dir),
                train_dir=str(run_dir),
                max_steps=300,
                checkpoint_every=300,
                threads=threads,
                quiet=True,
                tensorboard=False,
            )
        )
        assert summary["threads"] == threads
        results[threads] = (final_tensors(run_dir), summaries(run_dir))
    (step1, tensors1), log1 = results[1]
    assert step1 == 300
    for threads in (2, 3):
        (step, tensors), log = results[threads]
        assert step == 300
        assert_same_tensors(tensors1, tensors)
        assert log == log1  # the same loss values and eval precisions, bit for bit


@pytest.mark.realdata
def test_resumed_run_equals_an_uninterrupted_one(real_mnist_dir, tmp_path):
    def cli(train_dir, *args):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "mnistc.train",
                "--data-dir",
                str(real_mnist_dir),
                "--train-dir",
                str(train_dir),
                "--no-tensorboard",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        return [TIMING.sub("", line) for line in result.stdout.splitlines()]

    straight = cli(tmp_path / "straight", "--max-steps", "2000")
    first = cli(tmp_path / "resumed", "--max-steps", "1000")
    second = cli(tmp_path / "resumed", "--max-steps", "2000", "--resume")

    assert second[0].startswith("Resuming from ") and "(step 1000)" in second[0]
    # Output from step 1000 on is identical (timings aside), and so is what came before.
    cut = next(i for i, line in enumerate(straight) if line.startswith("Step 1000:"))
    assert second[1:] == straight[cut:]
    assert first == straight[:cut]
    assert_same_tensors(
        final_tensors(tmp_path / "straight")[1], final_tensors(tmp_path / "resumed")[1]
    )
    assert summaries(tmp_path / "straight") == summaries(tmp_path / "resumed")


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
@pytest.mark.parametrize(
    "update",
    [
        [],  # plain SGD at a constant rate, the tutorial's
        [
            "--optimizer",
            "adam",
            "--schedule",
            "one-cycle",
            "--learning-rate",
            "0.003",
            "--label-smoothing",
            "0.1",
        ],
    ],
    ids=["sgd", "adam-one-cycle"],
)
def test_killed_runs_resume_without_losing_completed_work(real_mnist_dir, tmp_path, update):
    """Kill the trainer at random moments (checkpoints every 50 steps, so kills land in
    saves too), resume each time, and end with the bits of an uninterrupted run: the
    parameters and the optimizer's state."""
    common = [
        "--data-dir",
        str(real_mnist_dir),
        "--hidden",
        "32,16",
        "--max-steps",
        "3000",
        "--checkpoint-every",
        "50",
        "--no-tensorboard",
        "--quiet",
        *update,
    ]

    def start(train_dir, *extra):
        return subprocess.Popen(
            [sys.executable, "-m", "mnistc.train", *common, "--train-dir", str(train_dir), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    began = time.perf_counter()
    reference = start(tmp_path / "reference")
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err
    # Kills land within a window scaled to the uninterrupted run, so that a dozen of them
    # fit into it however fast training is.
    window = (time.perf_counter() - began) / 40

    rng = random.Random(20261127)
    run_dir = tmp_path / "killed"
    manager = CheckpointManager(run_dir)
    kills = 0
    for _ in range(30):
        before = manager.latest_step() or 0
        proc = start(run_dir, *(["--resume"] if manager.has_checkpoints() else []))
        if kills < 12:  # then let it finish
            # Wait until this attempt has saved a checkpoint of its own (so every attempt
            # makes progress), then kill it at a random moment of the cycles that follow:
            # training, evaluating or in the middle of a save.
            while proc.poll() is None and (manager.latest_step() or 0) <= before:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, window))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        _, err = proc.communicate(timeout=600)
        # Every completed checkpoint survives the kill, and the newest loads cleanly.
        after = manager.latest_step() or 0
        assert after >= before, (before, after)
        if manager.has_checkpoints():
            step, tensors, meta = manager.restore_latest(
                on_fallback=lambda path, error: pytest.fail(f"{path}: {error}")
            )
            assert int(meta["global_step"]) == step
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
    else:
        pytest.fail("the run never finished")
    assert kills >= 8, "too few kills to mean anything; slow the schedule down"
    assert_same_tensors(final_tensors(tmp_path / "reference")[1], final_tensors(run_dir)[1])
    # No temp files from interrupted saves are mistaken for checkpoints.
    for path in run_dir.glob("checkpoint-*.safetensors"):
        load_file(path)
    assert np.isfinite(final_tensors(run_dir)[1]["hidden1/weights"]).all()
