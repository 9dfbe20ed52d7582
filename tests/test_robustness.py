"""No lost work and no traceback when the world misbehaves, shown on the command lines in
processes of their own: a full disk (a real, small tmpfs), a closed stdout, a network too
large for the machine, a gzip file that claims gigabytes, absurd thread counts, bad
environment variables, odd files named like checkpoints, and a resume with nothing left
to do. Each test states the promise; the mechanisms are in mnistc.runlog, fileio, model,
idx, runtime and checkpoint."""

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnistc.checkpoint import CheckpointManager, load_file

from conftest import assert_one_line_error, run_tool, run_tool_measured, tool_command, tool_env
from idx_helpers import fake_mnist, write_mnist_dir

SMALL = ["--fake-data", "--hidden", "16,8", "--batch-size", "20"]
MiB = 1 << 20

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="tmpfs, wait4 and RLIMIT_AS as on Linux"
)


def train(train_dir, *args, **options):
    return run_tool("train", *SMALL, "--train-dir", train_dir, *args, **options)


def no_temp_files(directory):
    """Nothing a writer leaves half-done: no temp file of fileio's (".NAME.tmp-HEX")."""
    return [p.name for p in Path(directory).rglob(".*.tmp-*")] == []


def assert_checkpoints_load(train_dir):
    for _, path in CheckpointManager(train_dir).list():
        load_file(path)  # complete, checksum verified


# ----------------------------------------------------------------------------------
# Full disks: a real tmpfs of a few hundred KB


@pytest.fixture
def small_disk(tmp_path):
    """mount(free_bytes): a fresh tmpfs filled up so that about `free_bytes` stay free;
    returns (mount point, the filler file to delete to free the space)."""
    mounted = []

    def mount(free_bytes, size=2 * MiB):
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", point],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
        mounted.append(point)
        filler = point / "filler"
        stat = os.statvfs(point)
        filler.write_bytes(bytes(max(0, stat.f_bavail * stat.f_frsize - free_bytes)))
        return point, filler

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", point], check=False)


@linux_only
def test_disk_full_at_the_event_file_is_one_line_and_leaves_nothing(small_disk):
    disk, _ = small_disk(0)
    result = train(disk / "run", "--max-steps", 300)
    assert_one_line_error(result, "train", "events.out.tfevents", "No space left on device")
    assert not list((disk / "run").glob("events.out.tfevents.*"))  # no headless event file
    assert no_temp_files(disk)


@linux_only
def test_disk_full_at_the_log_is_one_line_and_leaves_no_torn_record(small_disk):
    disk, _ = small_disk(0)
    result = train(disk / "run", "--max-steps", 300, "--no-tensorboard")
    assert_one_line_error(result, "train", "summaries.jsonl", "No space left on device")
    assert (disk / "run" / "summaries.jsonl").read_bytes() == b""
    assert no_temp_files(disk)


@linux_only
def test_disk_full_at_a_checkpoint_keeps_the_previous_ones_and_resume_finishes(
    small_disk, tmp_path
):
    """Room for two checkpoints of ~90 KB, not three: the run stops at the third with one
    line, the first two are intact, and once there is room again --resume ends exactly
    where an uninterrupted run ends (same final bits, same log)."""
    disk, filler = small_disk(230_000)
    common = ["--max-steps", 500, "--checkpoint-every", 100, "--no-tensorboard"]
    failed = train(disk / "run", *common)
    assert_one_line_error(
        failed,
        "train",
        "checkpoint-300.safetensors",
        "cannot write checkpoint",
        "No space left on device",
    )
    assert [s for s, _ in CheckpointManager(disk / "run").list()] == [100, 200]
    assert_checkpoints_load(disk / "run")
    assert no_temp_files(disk)

    filler.unlink()
    resumed = train(disk / "run", *common, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    reference = train(tmp_path / "reference", *common)
    assert reference.returncode == 0, reference.stderr
    final = [
        load_file(d / "checkpoint-500.safetensors")[0]
        for d in (disk / "run", tmp_path / "reference")
    ]
    assert all(final[0][n].tobytes() == final[1][n].tobytes() for n in final[1])
    logs = [(d / "summaries.jsonl").read_text() for d in (disk / "run", tmp_path / "reference")]
    assert logs[0] == logs[1]


def test_summary_json_that_is_a_directory_is_one_line_and_leaves_no_temp(tmp_path):
    (tmp_path / "summary.json").mkdir()
    result = train(tmp_path, "--max-steps", 100)
    assert_one_line_error(result, "train", "summary.json", "cannot write")
    assert no_temp_files(tmp_path)
    assert_checkpoints_load(tmp_path)  # the run's work is kept


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_on_a_full_disk(tmp_path):
    """Training goes on without printing (one warning); eval says so in one line."""
    with open("/dev/full", "w") as full:
        trained = train(tmp_path, "--max-steps", 200, stdout=full)
        assert trained.returncode == 0, trained.stderr
        assert trained.stderr.splitlines() == [
            "warning: stdout: cannot write (No space left on device); training goes on "
            "without printing"
        ]
        assert (tmp_path / "checkpoint-200.safetensors").exists()
        evaluated = run_tool("eval", "--train-dir", tmp_path, "--fake-data", stdout=full)
    assert_one_line_error(evaluated, "eval", "cannot write the output", "No space left")


# ----------------------------------------------------------------------------------
# A closed stdout (`| head`)


def run_into_closed_pipe(tool, *args, read_lines=0):
    """Run a tool with stdout a pipe whose reading end is closed after `read_lines` lines
    (0: before the tool starts); returns (exit status, stderr)."""
    reader, writer = os.pipe()
    if read_lines == 0:
        os.close(reader)
    proc = subprocess.Popen(
        tool_command(tool, *args), stdout=writer, stderr=subprocess.PIPE, env=tool_env(), text=True
    )
    os.close(writer)
    if read_lines:
        with os.fdopen(reader) as lines:
            for _ in range(read_lines):
                lines.readline()
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train_dir = tmp_path_factory.mktemp("trained")
    assert train(train_dir, "--max-steps", 100, "--quiet").returncode == 0
    return train_dir


@pytest.mark.skipif(os.name == "nt", reason="SIGPIPE semantics are POSIX")
@pytest.mark.parametrize("read_lines", [0, 2])
def test_training_into_a_closed_pipe_finishes_the_run(tmp_path, read_lines):
    status, err = run_into_closed_pipe(
        "train",
        *SMALL,
        "--max-steps",
        600,
        "--checkpoint-every",
        100,
        "--train-dir",
        tmp_path,
        read_lines=read_lines,
    )
    assert (status, err) == (0, "")
    assert [s for s, _ in CheckpointManager(tmp_path).list()] == [200, 300, 400, 500, 600]
    assert json.loads((tmp_path / "summary.json").read_text())["global_step"] == 600


@pytest.mark.skipif(os.name == "nt", reason="SIGPIPE semantics are POSIX")
@pytest.mark.parametrize("tool", ["eval", "predict"])
def test_eval_and_predict_into_a_closed_pipe_exit_quietly(trained, tmp_path, tool):
    image = tmp_path / "digit.pgm"
    image.write_bytes(b"P5\n28 28\n255\n" + bytes(784))
    args = ["--fake-data"] if tool == "eval" else [image] * 50
    status, err = run_into_closed_pipe(tool, "--train-dir", trained, *args)
    assert (status, err) == (141, "")


# ----------------------------------------------------------------------------------
# Too large for the machine


def test_a_network_too_large_for_the_machine_is_one_line_before_any_allocation(tmp_path):
    result, peak = run_tool_measured(
        "train", "--fake-data", "--hidden", "100000,100000", "--train-dir", tmp_path
    )
    assert_one_line_error(
        result, "train", "784-100000-100000-10", "batch size 100", "GiB", "--hidden", "--batch-size"
    )
    assert peak < 200 * MiB, f"peak RSS {peak / MiB:.0f} MiB"
    assert not list(tmp_path.glob("checkpoint*"))


def test_load_refuses_a_network_beyond_the_memory_limit(trained, monkeypatch):
    import mnistc
    from mnistc import runtime
    from mnistc.errors import CheckpointError

    monkeypatch.setattr(runtime, "memory_limit", lambda: (100_000, "a test's limit"))
    with pytest.raises(CheckpointError) as info:
        mnistc.load(trained)
    message = str(info.value)
    assert str(trained / "checkpoint-100.safetensors") in message
    assert "784-16-8-10 network at batch size 20 needs about 0.0 GiB" in message
    assert "a test's limit" in message


def test_memory_needed_counts_parameters_and_batch_buffers():
    from mnistc.model import BATCH_BUFFERS, memory_needed

    params = 784 * 16 + 16 + 16 * 8 + 8 + 8 * 10 + 10
    rows = 784 + 16 + 8 + 10
    assert memory_needed((784, 16, 8, 10), 20) == 4 * (params + BATCH_BUFFERS * 20 * rows)
    assert (
        memory_needed((784, 16, 8, 10), 20, 4) - memory_needed((784, 16, 8, 10), 20)
        == 4 * 3 * params
    )  # an optimizer's gradient and two state blocks


@linux_only
def test_memory_needed_is_an_upper_bound_of_what_a_step_and_an_eval_use():
    """Resident memory that building a 784-2048-2048-10 network at batch 500, a training
    step and an evaluation add stays within the estimate."""
    code = """if True:
        import numpy as np
        from mnistc.model import MLP, memory_needed
        def peak():  # VmHWM: this process's peak resident memory, in kB
            return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
                        if line.startswith("VmHWM:"))
        images = np.zeros((500, 784), np.uint8); labels = np.zeros(500, np.uint8)
        idx = np.arange(500, dtype=np.int32)
        before = peak()
        model = MLP((2048, 2048), 500, input_size=784, num_classes=10)
        model.train_step(images, labels, idx, 0.01, 2)
        model.evaluation(images, labels, 1, None, 2)
        print(peak() - before, memory_needed(model.sizes, 500))"""
    grown, estimate = map(
        int,
        subprocess.run(
            [sys.executable, "-c", code], env=tool_env(), capture_output=True, text=True, check=True
        ).stdout.split(),
    )
    assert 0 < grown <= estimate, (grown, estimate)


def write_cgroup(root, relative, name, value):
    path = root.joinpath(*relative.strip("/").split("/")) if relative.strip("/") else root
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(f"{value}\n")


def test_cgroup_memory_limits_v1_v2_nested_and_unlimited(tmp_path):
    from mnistc.runtime import _cgroup_memory_limits

    write_cgroup(tmp_path, "/", "memory.max", "max")
    write_cgroup(tmp_path, "/a", "memory.max", "8000000000")
    write_cgroup(tmp_path, "/a/b", "memory.max", "max")
    assert _cgroup_memory_limits(["0::/a/b"], tmp_path) == [8000000000]
    write_cgroup(tmp_path / "memory", "/docker/x", "memory.limit_in_bytes", "2147483648")
    write_cgroup(tmp_path / "memory", "/", "memory.limit_in_bytes", "9223372036854771712")
    assert sorted(_cgroup_memory_limits(["4:memory:/docker/x", "3:cpu:/x"], tmp_path)) == [
        2147483648,
        9223372036854771712,
    ]
    assert _cgroup_memory_limits(["0::/elsewhere"], tmp_path / "missing") == []


# ----------------------------------------------------------------------------------
# Inputs that claim more than they hold


def gzip_claiming_millions(path, images=2_700_000):
    """An IDX images file whose gzip stream really holds `images` 28x28 images (2.1 GB,
    nearly all zeros) in about 12 MB: gzip members of one sparse 64 MiB block, repeated."""
    rng = np.random.default_rng(0)
    block = np.zeros(64 * MiB, np.uint8)
    block[rng.integers(0, block.size, 20_000)] = rng.integers(1, 256, 20_000)
    body = images * 784
    member = gzip.compress(block.tobytes(), compresslevel=1, mtime=0)
    with open(path, "wb") as out:
        out.write(gzip.compress(struct.pack(">HBB3I", 0, 0x08, 3, images, 28, 28), mtime=0))
        for _ in range(body // block.size):
            out.write(member)
        out.write(gzip.compress(bytes(body % block.size), compresslevel=1, mtime=0))
    return path


@linux_only
def test_predict_refuses_a_small_gzip_claiming_millions_of_images(trained, tmp_path):
    """A 12 MB gzip IDX file that inflates to the 2.7 million images (2.1 GB) it claims,
    read under a 1 GiB address-space limit: one line, status 2, and the process never
    holds more than a few tens of MB beyond Python's."""
    claim = gzip_claiming_millions(tmp_path / "claims-idx3-ubyte.gz")
    assert 8 * MiB < claim.stat().st_size < 12 * MiB
    result, peak = run_tool_measured(
        "predict",
        "--train-dir",
        trained,
        claim,
        env_extra={"OMP_NUM_THREADS": "1"},
        preexec_fn=limited(1 << 30),
    )
    assert_one_line_error(result, "predict", str(claim), "claim", "gzip")
    assert result.stdout == ""
    assert peak < 150 * MiB, f"peak RSS {peak / MiB:.0f} MiB"


# ----------------------------------------------------------------------------------
# Threads and the environment


def limited(address_space, cpus=None):
    """preexec_fn: this many bytes of address space, and (if given) only `cpus` CPUs."""

    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        if cpus is not None:
            os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cpus]))

    return apply


@pytest.fixture(scope="module")
def wide_data(tmp_path_factory):
    """1100 training images: one batch of 1000 after a validation split of 100."""
    return write_mnist_dir(
        tmp_path_factory.mktemp("wide") / "mnist", fake_mnist(n_train=1100, n_test=100)
    )


@linux_only
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_absurd_thread_counts_are_capped_under_a_memory_limit(wide_data, tmp_path, how):
    """On one CPU, a 4096-wide layer at batch 1000 would start over a hundred threads of
    64 MB stack each; under a 2.5 GB address-space limit libgomp then fails mid-run.
    The count is capped at 8 per CPU, with a warning, and the run finishes."""
    args = [
        "--data-dir",
        wide_data,
        "--validation-size",
        100,
        "--hidden",
        4096,
        "--batch-size",
        1000,
        "--max-steps",
        1,
        "--train-dir",
        tmp_path,
        "--no-tensorboard",
    ]
    extra = {"OMP_STACKSIZE": "64M"}
    if how == "flag":
        args += ["--threads", 100000]
    else:
        extra["OMP_NUM_THREADS"] = "100000"
    result = run_tool(
        "train", *args, env_extra=extra, preexec_fn=limited(int(2.5 * 1024 * MiB), cpus=1)
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "warning: 100000 threads requested on 1 CPUs; using 8\n"
    assert json.loads((tmp_path / "summary.json").read_text())["threads"] == 8


@pytest.mark.parametrize("tool", ["train", "eval", "predict"])
def test_a_non_numeric_omp_num_threads_is_an_error(trained, tmp_path, tool):
    args = {
        "train": [*SMALL, "--max-steps", 1, "--train-dir", tmp_path / "new"],
        "eval": ["--train-dir", trained, "--fake-data"],
        "predict": ["--train-dir", trained, "x.pgm"],
    }[tool]
    result = run_tool(tool, *args, env_extra={"OMP_NUM_THREADS": "abc"}, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    # libgomp has its own say when it loads; ours is the last line, and nothing ran.
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"mnistc.{tool}: error: OMP_NUM_THREADS='abc' is not a positive whole number"
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------------
# --resume with nothing left to do


def test_resume_with_nothing_to_do_keeps_or_rebuilds_summary_json(tmp_path):
    assert train(tmp_path, "--max-steps", 200, "--quiet").returncode == 0
    written = (tmp_path / "summary.json").read_bytes()
    for max_steps in (100, 200):
        result = train(tmp_path, "--max-steps", max_steps, "--resume", "--quiet")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "summary.json").read_bytes() == written
    (tmp_path / "summary.json").unlink()
    assert train(tmp_path, "--max-steps", 150, "--resume", "--quiet").returncode == 0
    rebuilt = json.loads((tmp_path / "summary.json").read_text())
    original = json.loads(written)
    assert rebuilt["global_step"] == 200 and rebuilt["steps"] == 0
    assert rebuilt["precision"] == original["precision"] != {}


# ----------------------------------------------------------------------------------
# Odd things in the train dir


@pytest.fixture
def run_copy(trained, tmp_path):
    return Path(shutil.copytree(trained, tmp_path / "run"))


def make_odd(path, kind):
    if kind == "directory":
        path.mkdir()
    elif kind == "symlink-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)


@pytest.mark.skipif(os.name == "nt", reason="devices, FIFOs and symlinks as on POSIX")
@pytest.mark.parametrize("kind", ["directory", "symlink-to-dev-zero", "fifo"])
def test_a_non_file_named_like_the_newest_checkpoint_is_skipped_with_a_warning(run_copy, kind):
    odd = run_copy / "checkpoint-300.safetensors"
    make_odd(odd, kind)
    result = run_tool("eval", "--train-dir", run_copy, "--fake-data", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"warning: skipping {odd}: is not a regular file; falling back to the previous checkpoint\n"
    )
    assert json.loads(result.stdout)["global_step"] == 100


def test_an_index_that_is_a_directory_is_named_in_the_error(run_copy):
    (run_copy / "checkpoint").unlink()
    (run_copy / "checkpoint").mkdir()
    result = train(run_copy, "--max-steps", 200, "--resume")
    assert_one_line_error(
        result, "train", f"{run_copy / 'checkpoint'}: cannot write the checkpoint index"
    )
    assert "checkpoint-200" not in result.stderr
    assert_checkpoints_load(run_copy)


def test_a_bad_byte_in_the_log_does_not_block_resume(run_copy):
    log = run_copy / "summaries.jsonl"
    good = log.read_bytes()
    log.write_bytes(good + b'{"step": 150, "tag": "lo\xffss", "value": 1.0}\n')
    result = train(run_copy, "--max-steps", 200, "--resume", "--quiet")
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert log.read_bytes().startswith(good) and steps[-1] == 199


def test_overwrite_removes_the_old_runs_event_files(tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    assert train(tmp_path, "--max-steps", 300, "--quiet").returncode == 0
    assert train(tmp_path, "--max-steps", 50, "--overwrite", "--quiet").returncode == 0
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    events = accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [0]
    assert [s for s, _ in CheckpointManager(tmp_path).list()] == [50]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--seed", "-1"], ["--seed", "-1"]),
        (
            ["--validation-size", "12", "--batch-size", "1"],
            ["--validation-size 12", "no training examples"],
        ),
    ],
)
def test_bad_values_name_their_flag(tmp_path, args, fragments):
    data_dir = write_mnist_dir(tmp_path / "mnist", fake_mnist(n_train=12, n_test=5))
    result = run_tool(
        "train", "--data-dir", data_dir, "--max-steps", 1, "--train-dir", tmp_path / "run", *args
    )
    assert_one_line_error(result, "train", *fragments)
    assert "--batch-size" not in result.stderr or "--batch-size" in fragments
