"""Training with every optimizer and schedule through mnistc.training: a killed run resumed
from its last checkpoint ends with the same bits as an uninterrupted one, any thread count
gives the same bits, the settings a checkpoint records must match on --resume, and
--epochs checkpoints and evaluates at each epoch's end. On a synthetic, learnable data set
(tests/idx_helpers.learnable_mnist), so a run that does not learn fails too."""

import contextlib
import io
import json
import shutil

import numpy as np
import pytest

from mnistc.checkpoint import CheckpointManager, load_file
from mnistc.config import TrainConfig
from mnistc.errors import CheckpointError
from mnistc.training import run_training

from idx_helpers import learnable_mnist, write_mnist_dir

# (optimizer, schedule) settings, each a run of 60 steps with checkpoints every 20.
SETTINGS = {
    "sgd-constant": dict(learning_rate=0.1),
    "sgd-decay-cosine": dict(weight_decay=1e-3, schedule="cosine", learning_rate=0.2),
    "momentum-linear": dict(optimizer="momentum", schedule="linear", learning_rate=0.1),
    "nesterov-one-cycle-smoothed": dict(
        optimizer="nesterov", schedule="one-cycle", learning_rate=0.2, label_smoothing=0.1
    ),
    "adam-cosine-warmup": dict(
        optimizer="adam", schedule="cosine", learning_rate=3e-3, warmup_steps=10
    ),
    "adamw-one-cycle": dict(optimizer="adamw", schedule="one-cycle", learning_rate=5e-3),
}
COMMON = dict(
    hidden=(24, 16),
    batch_size=32,
    validation_size=100,
    max_steps=60,
    checkpoint_every=20,
    quiet=True,
    tensorboard=False,
    download=False,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_mnist_dir(tmp_path_factory.mktemp("learnable") / "mnist", learnable_mnist())


def train(train_dir, data_dir, **options):
    settings = {**COMMON, **options}
    return run_training(TrainConfig(data_dir=str(data_dir), train_dir=str(train_dir), **settings))


def tensors_at(train_dir, step):
    tensors, meta = load_file(CheckpointManager(train_dir).path_for(step))
    return tensors, meta


def assert_same_checkpoint(dir_a, dir_b, step):
    a, meta_a = tensors_at(dir_a, step)
    b, meta_b = tensors_at(dir_b, step)
    assert set(a) == set(b)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), f"{name} at step {step}"
    for key in ("global_step", "optimizer_step", "rng_state", "data_state", "last_eval"):
        assert meta_a[key] == meta_b[key], key


@pytest.fixture(scope="module", params=list(SETTINGS))
def one_go(request, tmp_path_factory, data_dir):
    """(settings name, train dir, summary) of an uninterrupted 60-step run."""
    train_dir = tmp_path_factory.mktemp(request.param)
    summary = train(train_dir, data_dir, **SETTINGS[request.param])
    return request.param, train_dir, summary


def test_every_setting_learns_and_records_its_optimizer_state(one_go):
    name, train_dir, summary = one_go
    assert summary["precision"]["test"] >= 0.9, (name, summary["precision"])
    tensors, meta = tensors_at(train_dir, 60)
    optimizer = json.loads(meta["optimizer"])
    assert optimizer == summary["optimizer"] and optimizer["name"] == SETTINGS[name].get(
        "optimizer", "sgd"
    )
    state = [k for k in tensors if k.startswith("optimizer/")]
    expected = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adamw": 2}[optimizer["name"]]
    assert len(state) == expected
    assert all(
        tensors[k].size
        == sum(t.size for n, t in tensors.items() if n.endswith(("/weights", "/biases")))
        for k in state
    )
    assert int(meta["optimizer_step"]) == 60


def test_killed_and_resumed_equals_one_go(one_go, tmp_path, data_dir):
    """A kill after the step-20 checkpoint leaves checkpoint-20 as the newest: resuming
    from there must rewrite checkpoints 40 and 60 with exactly the uninterrupted bits."""
    name, train_dir, _ = one_go
    killed = tmp_path / "killed"
    shutil.copytree(train_dir, killed)
    for step in (40, 60):
        CheckpointManager(killed).path_for(step).unlink()
    train(killed, data_dir, resume=True, **SETTINGS[name])
    for step in (40, 60):
        assert_same_checkpoint(train_dir, killed, step)


@pytest.mark.parametrize("threads", [1, 3])
def test_thread_count_does_not_change_a_bit(one_go, tmp_path, data_dir, threads):
    name, train_dir, _ = one_go
    other = tmp_path / f"threads{threads}"
    train(other, data_dir, threads=threads, **SETTINGS[name])
    assert_same_checkpoint(train_dir, other, 60)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (
            dict(optimizer="adam", schedule="one-cycle", learning_rate=0.2, label_smoothing=0.1),
            "optimizer",
        ),
        (
            dict(
                optimizer="nesterov",
                schedule="one-cycle",
                learning_rate=0.2,
                label_smoothing=0.1,
                momentum=0.8,
            ),
            "momentum=0.8",
        ),
        (
            dict(
                optimizer="nesterov", schedule="one-cycle", learning_rate=0.3, label_smoothing=0.1
            ),
            "schedule",
        ),
        (
            dict(
                optimizer="nesterov",
                schedule="one-cycle",
                learning_rate=0.2,
                label_smoothing=0.1,
                max_steps=80,
            ),
            "schedule",
        ),
        (dict(optimizer="nesterov", schedule="one-cycle", learning_rate=0.2), "label_smoothing"),
    ],
)
def test_resuming_with_other_settings_is_a_clear_error(tmp_path, data_dir, change, fragment):
    train(tmp_path, data_dir, **SETTINGS["nesterov-one-cycle-smoothed"])
    with pytest.raises(CheckpointError) as info:
        train(tmp_path, data_dir, resume=True, **change)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_constant_rate_may_change_and_the_run_grow_on_resume(tmp_path, data_dir):
    train(tmp_path, data_dir)
    summary = train(tmp_path, data_dir, resume=True, max_steps=80, learning_rate=0.02)
    assert summary["global_step"] == 80 and summary["steps"] == 20


def test_epochs_evaluate_and_checkpoint_at_each_epochs_end(tmp_path, data_dir):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = train(
            tmp_path,
            data_dir,
            max_steps=None,
            epochs=2.5,
            checkpoint_every=None,
            quiet=False,
            optimizer="nesterov",
            schedule="one-cycle",
            learning_rate=0.2,
        )
    # 1000 training examples, batch 32: epoch e ends at step ceil(1000 e / 32).
    assert [s for s, _ in CheckpointManager(tmp_path).list()] == [32, 63, 79]
    lines = out.getvalue().splitlines()
    assert [line for line in lines if line.startswith("Epoch")] == [
        "Epoch 1.024 of 2.5 (step 32)",
        "Epoch 2.016 of 2.5 (step 63)",
        "Epoch 2.5 of 2.5 (step 79)",
    ]
    assert sum(line.endswith("Data Eval:") for line in lines) == 9  # three splits, three times
    assert summary["epochs"] == 2.5 and summary["global_step"] == 79
    assert any(", lr = " in line for line in lines if line.startswith("Step "))


def test_learning_rate_is_logged_with_the_loss(tmp_path, data_dir):
    train(
        tmp_path,
        data_dir,
        schedule="linear",
        learning_rate=0.1,
        max_steps=250,
        checkpoint_every=250,
    )
    records = [json.loads(line) for line in (tmp_path / "summaries.jsonl").read_text().splitlines()]
    rates = {r["step"]: r["value"] for r in records if r["tag"] == "learning_rate"}
    losses = [r["step"] for r in records if r["tag"] == "loss"]
    assert losses == sorted(rates) == [0, 100, 200]
    np.testing.assert_allclose(
        [rates[t] for t in losses], [0.1 * (1 - t / 250) for t in losses], rtol=1e-12
    )
