"""One writer per train dir (mnistc.lock), shown with real processes: while one run trains,
a second one in the same --train-dir — fresh or --resume — is refused before it touches
anything, readers (eval) still work, and a SIGKILLed run leaves no lock behind."""

import json
import os
import signal
import subprocess
import time

import pytest

from mnistc.checkpoint import CheckpointManager

from conftest import assert_one_line_error, run_tool, tool_command, tool_env

SMALL = ["--fake-data", "--hidden", "16,8", "--batch-size", "20", "--no-tensorboard"]

pytestmark = pytest.mark.skipif(os.name == "nt", reason="SIGKILL and fork are POSIX")


class Trainer:
    """A `python -m mnistc.train` that runs until killed (10 million steps)."""

    def __init__(self, train_dir, *extra):
        self.proc = subprocess.Popen(
            tool_command(
                "train", *SMALL, "--max-steps", 10_000_000, "--train-dir", train_dir, *extra
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=tool_env(),
        )
        self.manager = CheckpointManager(train_dir)

    def wait_for_line(self, prefix):
        """Read stdout until a line starting with `prefix` (the lock is taken before the
        first line is printed)."""
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line
        pytest.fail(f"the trainer ended first: {self.proc.wait()}, {self.proc.stderr.read()}")

    def wait_for_checkpoint(self, after=0):
        deadline = time.monotonic() + 60
        while (self.manager.latest_step() or 0) <= after:
            assert self.proc.poll() is None, self.proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint within a minute"
            time.sleep(0.01)
        return self.manager.latest_step()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=60)
        return self.proc.returncode


@pytest.fixture
def trainers():
    started = []
    yield lambda *args: started.append(Trainer(*args)) or started[-1]
    for trainer in started:
        trainer.kill()


def checkpoint_files(train_dir):
    return {p.name: p.read_bytes() for p in train_dir.glob("checkpoint-*.safetensors")}


def test_a_second_fresh_run_is_refused_while_the_first_trains(tmp_path, trainers):
    # The first run writes no checkpoint for a long time: the "already holds
    # checkpoints" check cannot stop the second one, only the lock can.
    first = trainers(tmp_path, "--checkpoint-every", 10_000_000)
    first.wait_for_line("Step 0:")
    second = run_tool("train", *SMALL, "--max-steps", 50, "--train-dir", tmp_path)
    assert_one_line_error(second, "train", str(tmp_path), f"in use by process {first.proc.pid}")
    assert not list(tmp_path.glob("checkpoint*")) and not (tmp_path / "summary.json").exists()
    assert (tmp_path / ".lock").read_text().strip() == str(first.proc.pid)
    assert first.proc.poll() is None  # the first run goes on


def test_a_resume_is_refused_while_the_run_trains_and_readers_still_work(tmp_path, trainers):
    first = trainers(tmp_path, "--checkpoint-every", 100)
    step = first.wait_for_checkpoint()
    resumed = run_tool(
        "train", *SMALL, "--max-steps", step + 100, "--resume", "--train-dir", tmp_path
    )
    assert_one_line_error(resumed, "train", f"in use by process {first.proc.pid}")
    assert "Resuming" not in resumed.stdout
    # eval takes no lock: it reads the newest complete checkpoint while the run writes more.
    evaluated = run_tool("eval", "--train-dir", tmp_path, "--fake-data", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["global_step"] >= step
    first.wait_for_checkpoint(after=step)  # still training, checkpoints still its own
    first.kill()
    steps = sorted(CheckpointManager(tmp_path).list())
    assert len(steps) <= 5 and all(s % 100 == 0 for s, _ in steps)


def test_the_lock_of_a_sigkilled_run_is_not_stale(tmp_path, trainers):
    first = trainers(tmp_path, "--checkpoint-every", 100)
    step = first.wait_for_checkpoint()
    assert first.kill() == -signal.SIGKILL
    assert (tmp_path / ".lock").read_text().strip() == str(first.proc.pid)  # the pid stays
    before = checkpoint_files(tmp_path)
    newest = max(CheckpointManager(tmp_path).list())[0]
    assert newest >= step
    resumed = run_tool(
        "train", *SMALL, "--max-steps", newest + 100, "--resume", "--train-dir", tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(f"Resuming from {tmp_path / f'checkpoint-{newest}'}")
    assert (tmp_path / f"checkpoint-{newest + 100}.safetensors").exists()
    # What the killed run completed is still there, bit for bit (keep=5 pruned the oldest).
    after = checkpoint_files(tmp_path)
    assert all(after[name] == data for name, data in before.items() if name in after)
    assert (tmp_path / ".lock").read_text() == ""  # released by a clean exit


def test_one_process_cannot_take_a_train_dirs_lock_twice(tmp_path):
    from mnistc.lock import TrainDirLock, TrainDirLocked

    with TrainDirLock(tmp_path):
        with pytest.raises(TrainDirLocked, match=f"in use by process {os.getpid()}"):
            with TrainDirLock(tmp_path):
                pass
    with TrainDirLock(tmp_path):  # released on exit
        pass


def test_a_lock_that_cannot_be_opened_is_a_clear_error(tmp_path):
    from mnistc.errors import MnistcError
    from mnistc.lock import TrainDirLock

    (tmp_path / ".lock").mkdir()
    with pytest.raises(MnistcError, match=r"\.lock: cannot open the train dir's lock"):
        with TrainDirLock(tmp_path):
            pass
