"""The exceptions mnistc raises from its data and checkpoint layers.

Kernel wrappers raise the built-in ValueError/TypeError (they are argument checks);
everything that concerns a file on disk raises a subclass of MnistcError whose
message names the file and the problem, so the CLI can print it as one line.
"""


class MnistcError(Exception):
    """Base class of every error mnistc raises on purpose."""


class DataError(MnistcError):
    """An IDX file or data directory is missing, malformed or fails its checksum."""


class DownloadError(DataError):
    """The data set could not be fetched from any mirror."""


class CheckpointError(MnistcError):
    """A checkpoint or its index is missing, malformed, corrupt or incompatible.

    `reason` is the message without the file name, for callers that name the file
    themselves; `path` is the file, when one is concerned.
    """

    def __init__(self, message, *, path=None, reason=None):
        super().__init__(message)
        self.path = path
        self.reason = message if reason is None else reason

    @classmethod
    def about(cls, path, reason):
        """The error "<path>: <reason>" about one file."""
        return cls(f"{path}: {reason}", path=path, reason=reason)


class TrainingError(MnistcError):
    """Training cannot continue (e.g. the loss became NaN or infinite)."""
