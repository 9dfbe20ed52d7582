"""What a training run reports: the tutorial's printed lines, the JSON-lines log of its
scalars, TensorBoard event files and the final summary.json.

Checkpoints and logs matter more than stdout: when stdout goes away (a closed pipe, e.g.
`| head`, or a full disk), the run stops printing and keeps training. A failed write of a log or of
summary.json is an MnistcError naming the file (the CLI's one-line error); the file is
cut back to its last complete record, and summary.json is only ever replaced whole.
"""

import contextlib
import json
import os
import sys
from pathlib import Path

from .errors import MnistcError
from .events import EventWriter
from .fileio import atomic_write

SUMMARIES_FILE = "summaries.jsonl"
SUMMARY_FILE = "summary.json"
EVENTS_PREFIX = "events.out.tfevents."


def _cannot_write(path, error):
    return MnistcError(f"{path}: cannot write: {error.strerror or error}")


def silence_stdout():
    """Point stdout at the null device: after a closed pipe, any later print (and the
    interpreter's flush at exit) would raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def read_records(path):
    """The JSON records of a summaries.jsonl, skipping lines that are torn (a kill during
    a write) or not JSON; [] when the file does not exist."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as error:
        raise MnistcError(f"{path}: cannot read: {error.strerror or error}") from None
    records = []
    for line in raw.splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


class RunOutput:
    """Prints the tutorial's lines (unless quiet), appends the JSON-lines summaries and,
    unless disabled, writes TensorBoard event files with the same scalars (the
    tutorial's SummaryWriter)."""

    def __init__(self, train_dir, quiet, first_step, tensorboard):
        self.quiet = quiet
        self.path = Path(train_dir) / SUMMARIES_FILE
        self._keep_before(first_step)
        try:
            self.file = open(self.path, "ab", buffering=0)  # a failed write leaves no buffer
        except OSError as error:
            raise _cannot_write(self.path, error) from None
        self.events = None
        if tensorboard:
            # purge_step hides events a killed run logged past the restored step.
            try:
                self.events = EventWriter(train_dir, purge_step=first_step if first_step else None)
            except OSError as error:
                self.file.close()
                raise _cannot_write(Path(train_dir) / f"{EVENTS_PREFIX}*", error) from None

    def _keep_before(self, first_step):
        # A run killed after its last checkpoint logged steps that will now be redone:
        # keep the log consistent with the restored state.
        if not self.path.exists():
            return
        kept = [json.dumps(r) + "\n" for r in read_records(self.path) if r["step"] < first_step]
        try:
            atomic_write(self.path, [line.encode("utf-8") for line in kept])
        except OSError as error:
            raise _cannot_write(self.path, error) from None

    def say(self, text):
        if self.quiet:
            return
        try:
            print(text, flush=True)
        except OSError as error:  # a closed pipe, silently; else (a full disk) once, on stderr
            self.quiet = True
            silence_stdout()
            if not isinstance(error, BrokenPipeError):
                with contextlib.suppress(OSError):
                    print(
                        f"warning: stdout: cannot write ({error.strerror or error}); "
                        "training goes on without printing",
                        file=sys.stderr,
                        flush=True,
                    )

    def scalar(self, step, tag, value):
        record = json.dumps({"step": step, "tag": tag, "value": value}) + "\n"
        self._append(self.file, self.path, record.encode())
        if self.events is not None:
            try:
                self.events.add_scalar(tag, value, step)
            except OSError as error:
                raise _cannot_write(self.events.path, error) from None

    @staticmethod
    def _append(file, path, record):
        end = file.seek(0, os.SEEK_END)
        try:
            view = memoryview(record)
            while view:  # an unbuffered write may take only part of it
                view = view[file.write(view) :]
        except OSError as error:
            with contextlib.suppress(OSError):  # no torn record left behind
                file.truncate(end)
            raise _cannot_write(path, error) from None

    def close(self):
        for closable in (self.file, self.events):
            if closable is not None:
                try:
                    closable.close()
                except OSError:
                    pass


def write_summary(train_dir, summary):
    """Replace summary.json with `summary`, atomically; MnistcError if it cannot be."""
    path = Path(train_dir) / SUMMARY_FILE
    try:
        atomic_write(path, [(json.dumps(summary, indent=2) + "\n").encode("utf-8")])
    except OSError as error:
        raise _cannot_write(path, error) from None


def remove_logs(train_dir):
    """Delete a run's logs (summaries.jsonl, summary.json, TensorBoard event files) so
    that a fresh run in the folder is not shown as part of the old one."""
    train_dir = Path(train_dir)
    try:
        for entry in os.scandir(train_dir):
            if entry.is_file() and (
                entry.name in (SUMMARIES_FILE, SUMMARY_FILE) or entry.name.startswith(EVENTS_PREFIX)
            ):
                os.unlink(entry.path)
    except OSError as error:
        raise MnistcError(
            f"{train_dir}: cannot remove the old run's logs: {error.strerror or error}"
        ) from None
