"""Fetching a data set's files from its mirrors, verified, with bounded waiting.

A file is kept only when it is gzip and the SHA-256 of its decompressed content is the
published one. Each mirror gets `idle_timeout` seconds to connect and between any two
bytes, and `deadline` seconds for the whole file; then the next mirror is tried. Nothing
half-downloaded is ever left behind: the temporary file is removed on every failure,
Ctrl-C and SIGTERM included. This module prints nothing; a caller that wants a progress
line passes `progress`.
"""

import contextlib
import pathlib
import signal
import threading
import time

from .errors import DownloadError
from .fileio import atomic_output
from .idx import GZIP_ERRORS, GZIP_MAGIC, sha256_of_content

MAX_DOWNLOAD_BYTES = 64 << 20  # the largest file of a registered data set is ~26 MB
CHUNK_BYTES = 1 << 16
IDLE_TIMEOUT = 10.0  # seconds without a byte (or to connect) before the next mirror
DEADLINE = 300.0  # seconds for one file from one mirror
PROGRESS_AFTER = 1.0  # a download that takes longer than this reports progress


class MirrorFailure(Exception):
    """Why one mirror could not supply one file (a short phrase)."""


class _Terminated(BaseException):
    """SIGTERM during a download: unwinds like Ctrl-C so the temporary file goes."""


class _SigtermRaises:
    """While active (main thread only), SIGTERM raises _Terminated; the previous handler
    is restored afterwards and, if the signal came, the process then exits with 143."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise _Terminated()

    def __exit__(self, kind, value, traceback):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        if kind is _Terminated:
            raise SystemExit(128 + signal.SIGTERM)
        return False


class _Deadline:
    """Shuts a transfer's sockets down once `seconds` have passed, whatever it is doing:
    connecting, reading headers or the body. The idle timeout alone cannot end a server
    that sends a byte now and then; a blocked read then sees the end of the stream."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.expired = False
        self._sockets = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()
        return False

    def _expire(self):
        self.expired = True
        for sock in list(self._sockets):
            _shut(sock)

    def _watch(self, sock):
        self._sockets.append(sock)
        if self.expired:  # expired while connecting
            _shut(sock)

    def opener(self):
        """A urllib opener (proxies and redirects as urlopen's) whose connections are
        watched."""
        import http.client
        import urllib.request

        def watched(connection_class):
            deadline = self

            class Watched(connection_class):
                def connect(self):
                    super().connect()
                    deadline._watch(self.sock)

            return Watched

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(watched(http.client.HTTPConnection), req)

        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(
                    watched(http.client.HTTPSConnection), req, context=self._context
                )

        return urllib.request.build_opener(HTTP, HTTPS)


def _shut(sock):
    import socket

    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


@contextlib.contextmanager
def _network_errors(deadline, idle_timeout):
    """Turn what a mirror can do wrong into MirrorFailure (OSError from our own file
    passes through: it is not the mirror's fault)."""
    import http.client
    import socket
    import urllib.error

    try:
        yield
    except urllib.error.HTTPError as error:
        raise MirrorFailure(f"HTTP {error.code}") from None
    except (OSError, http.client.HTTPException) as error:
        if deadline.expired:
            raise MirrorFailure(f"not finished after {deadline.seconds:g} s") from None
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise MirrorFailure(f"no data for {idle_timeout:g} s") from None
        raise MirrorFailure(str(reason) or type(reason).__name__) from None


def _fetch(url, out, idle_timeout, deadline, progress, name):
    """Copy `url` into the open file `out`; MirrorFailure on any problem of the mirror."""
    start = time.monotonic()
    size = 0
    with _Deadline(deadline) as watchdog:
        with _network_errors(watchdog, idle_timeout):
            response = watchdog.opener().open(url, timeout=idle_timeout)
        with response:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            while True:
                with _network_errors(watchdog, idle_timeout):
                    chunk = response.read1(CHUNK_BYTES)  # whatever one receive brings
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise MirrorFailure(f"more than {MAX_DOWNLOAD_BYTES} bytes")
                out.write(chunk)
                elapsed = time.monotonic() - start
                # The end is reported once, below.
                if progress is not None and elapsed > PROGRESS_AFTER and size != total:
                    progress(name, size, total, elapsed)
    if watchdog.expired:
        raise MirrorFailure(f"not finished after {deadline:g} s ({size} bytes)")
    if total is not None and size != total:
        raise MirrorFailure(f"the connection closed after {size} of {total} bytes")
    if progress is not None and time.monotonic() - start > PROGRESS_AFTER:
        progress(name, size, size, time.monotonic() - start)


def fetch_verified(
    url,
    destination,
    expected_sha256,
    *,
    idle_timeout=IDLE_TIMEOUT,
    deadline=DEADLINE,
    progress=None,
):
    """Download `url` to `destination` atomically, keeping it only if it is gzip whose
    decompressed SHA-256 is `expected_sha256`; MirrorFailure otherwise."""
    destination = pathlib.Path(destination)
    with _SigtermRaises(), atomic_output(destination) as out:
        _fetch(url, out, idle_timeout, deadline, progress, destination.name)
        out.flush()
        with open(out.name, "rb") as downloaded:
            if downloaded.read(2) != GZIP_MAGIC:
                raise MirrorFailure("not a gzip file")
        try:
            digest = sha256_of_content(out.name)
        except GZIP_ERRORS as error:
            raise MirrorFailure(f"corrupt or truncated gzip ({error})") from None
        if digest != expected_sha256:
            raise MirrorFailure("SHA-256 mismatch")


def download_files(data_dir, names, mirrors, checksums, **options):
    """Fetch `<mirror><name>.gz` for each name into data_dir as `<name>.gz`, trying the
    mirrors in order. DownloadError, one line listing every mirror's failure, when no
    mirror supplies a file. `options` go to fetch_verified."""
    data_dir = pathlib.Path(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(
            f"{data_dir}: cannot create the data folder: {error.strerror or error}"
        ) from None
    for name in names:
        failures = []
        for mirror in mirrors:
            try:
                fetch_verified(
                    f"{mirror}{name}.gz", data_dir / f"{name}.gz", checksums[name], **options
                )
                break
            except MirrorFailure as failure:
                failures.append(f"{mirror}: {failure}")
            except OSError as error:  # the destination folder, not the mirror
                raise DownloadError(
                    f"{data_dir / name}.gz: cannot write: {error.strerror or error}"
                ) from None
        else:
            raise DownloadError(
                f"could not download {name}.gz ({'; '.join(failures)}); "
                f"put the files in {data_dir} or pass --data-dir DIR"
            )


def download_missing(spec, data_dir, **options):
    """Download each of the data set's files that `data_dir` lacks (neither raw nor .gz),
    from spec.mirrors, checked against spec.sha256; files present are left alone."""
    from .datasets import missing_files

    download_files(
        data_dir, missing_files(spec, pathlib.Path(data_dir)), spec.mirrors, spec.sha256, **options
    )


def stderr_progress(stream=None):
    """A `progress` callback printing one updating line per file on stderr (a TTY), or a
    line when a file starts and when it ends (not a TTY)."""
    import sys

    stream = stream or sys.stderr
    tty = stream.isatty()
    started = set()
    working = True

    def report(name, size, total, elapsed):
        nonlocal working
        if working:
            try:
                show(name, size, total, elapsed)
            except (OSError, ValueError):  # stderr closed: no progress line is worth failing
                working = False

    def show(name, size, total, elapsed):
        done = total is not None and size >= total
        amount = f"{size / 1e6:.1f}" + (f" of {total / 1e6:.1f}" if total else "") + " MB"
        if tty:
            end = "\n" if done else ""
            print(
                f"\rmnistc: downloading {name}: {amount} ({elapsed:.0f} s)",
                end=end,
                file=stream,
                flush=True,
            )
        elif name not in started or done:
            started.add(name)
            state = f"done, {amount} in {elapsed:.1f} s" if done else "in progress"
            print(f"mnistc: downloading {name}: {state}", file=stream, flush=True)

    return report
