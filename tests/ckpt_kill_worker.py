# tests/ckpt_kill_worker.py: the victim process of test_checkpoint's SIGKILL test.
#
# It is: a loop that saves checkpoints of a few MB through CheckpointManager,
# resuming after the newest one on disk, and prints each step once save()
# has returned. It is not: a test by itself, or anything the package uses.
"""Usage: python ckpt_kill_worker.py DIRECTORY KEEP  (prints "ready", then one step per line)."""

import sys

import numpy as np

from mnistc.checkpoint import CheckpointManager

# 3 MB of float32, so a save spends milliseconds writing and a random kill
# often lands in the middle of one.
WEIGHT_COUNT = 768 * 1024


def tensors_for_step(step: int) -> dict[str, np.ndarray]:
    """What the worker saves at `step`: a cheap, exact, deterministic function of it."""
    base = np.arange(WEIGHT_COUNT, dtype=np.float32)  # < 2**24, so base + step is exact
    return {
        "weights": (base + np.float32(step)).reshape(-1, 1024),
        "step": np.array(step, dtype=np.int64),
        "bytes": ((np.arange(4099, dtype=np.int64) * step) % 251).astype(np.uint8),
    }


def main() -> None:
    directory, keep = sys.argv[1], int(sys.argv[2])
    manager = CheckpointManager(directory, keep=keep)
    step = (manager.latest_step() or 0) + 1
    print("ready", flush=True)
    while True:
        manager.save(step, tensors_for_step(step), {"global_step": str(step)})
        print(step, flush=True)
        step += 1


if __name__ == "__main__":
    main()
