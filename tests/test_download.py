# tests/test_download.py: mnistc.download and read_data_sets' download path against a
# local HTTP server with two "mirrors" (/m1/, /m2/). Nothing here touches the internet.
import functools
import gzip
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from mnistc import data, datasets
from mnistc.download import download_missing
from mnistc.errors import DataError, DownloadError

from conftest import tool_env
from idx_helpers import MNIST_NAMES, fake_mnist, sha256_table, write_mnist_dir

TRAIN_IMAGES = MNIST_NAMES["train_images"]
TIMEOUT = 2.0


@pytest.fixture(autouse=True)
def local_urls_only(monkeypatch):
    """Fail any attempt to open a URL that is not on 127.0.0.1 (urlopen and every opener
    go through OpenerDirector.open)."""
    real_open = urllib.request.OpenerDirector.open

    def open_local(self, url, *args, **kwargs):
        url = url if isinstance(url, str) else url.full_url
        assert urllib.parse.urlsplit(url).hostname == "127.0.0.1", f"test tried to open {url}"
        return real_open(self, url, *args, **kwargs)

    monkeypatch.setattr(urllib.request.OpenerDirector, "open", open_local)


class Mirrors:
    """A served folder tree: put files under /m1/ and /m2/, read back what was requested."""

    def __init__(self, root, base_url, requests):
        self.root = root
        self.requests = requests  # paths, in the order the server saw them
        self.urls = (f"{base_url}/m1/", f"{base_url}/m2/")

    def put(self, mirror, name, content):
        folder = self.root / mirror
        folder.mkdir(exist_ok=True)
        (folder / name).write_bytes(content)

    def put_all(self, mirror, files):
        for name, raw in files.items():
            self.put(mirror, f"{name}.gz", gzip.compress(raw, mtime=0))


@pytest.fixture
def mirrors(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield Mirrors(root, f"http://127.0.0.1:{server.server_address[1]}", requests)
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def data_dir(tmp_path):
    """Where downloads go (created by download_missing), apart from the served tree."""
    return tmp_path / "mnist"


@pytest.fixture
def files():
    return fake_mnist(n_train=12, n_test=5)


def served_mnist(urls, files, checksums=None):
    """MNIST's registry entry with the test's mirrors and the checksums of `files`."""
    return datasets.MNIST._replace(mirrors=tuple(urls), sha256=checksums or sha256_table(files))


def download(directory, urls, files, checksums=None, **options):
    """download_missing from `urls` with the checksums of `files` and a short timeout."""
    options.setdefault("idle_timeout", TIMEOUT)
    download_missing(served_mnist(urls, files, checksums), directory, **options)


def assert_downloaded(directory, files):
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{name}.gz" for name in files)
    for name, raw in files.items():
        assert gzip.decompress((directory / f"{name}.gz").read_bytes()) == raw


def test_good_files_from_first_mirror(tmp_path, mirrors, files):
    mirrors.put_all("m1", files)
    mirrors.put_all("m2", files)
    target = tmp_path / "new" / "mnist"  # created, parents too
    download(target, mirrors.urls, files)
    assert_downloaded(target, files)
    assert sorted(mirrors.requests) == sorted(f"/m1/{name}.gz" for name in files)


def test_missing_on_first_mirror_uses_second(data_dir, mirrors, files):
    mirrors.put_all("m2", files)
    download(data_dir, mirrors.urls, files)
    assert_downloaded(data_dir, files)
    assert (
        f"/m1/{TRAIN_IMAGES}.gz" in mirrors.requests
        and f"/m2/{TRAIN_IMAGES}.gz" in mirrors.requests
    )


@pytest.mark.parametrize(
    "bad_content",
    [
        pytest.param(b"<html><body>Access denied</body></html>", id="html-page"),
        pytest.param(None, id="truncated-gzip"),
        pytest.param(b"", id="empty"),
    ],
)
def test_bad_file_on_first_mirror_is_rejected(data_dir, mirrors, files, bad_content):
    mirrors.put_all("m1", files)
    mirrors.put_all("m2", files)
    if bad_content is None:
        bad_content = gzip.compress(files[TRAIN_IMAGES], mtime=0)[:-100]
    mirrors.put("m1", f"{TRAIN_IMAGES}.gz", bad_content)
    download(data_dir, mirrors.urls, files)
    assert_downloaded(data_dir, files)  # the good copy from m2, and no temp files
    assert f"/m2/{TRAIN_IMAGES}.gz" in mirrors.requests


def test_checksum_mismatch_everywhere(data_dir, mirrors, files):
    mirrors.put_all("m1", files)
    mirrors.put_all("m2", files)
    checksums = sha256_table(files)
    checksums[TRAIN_IMAGES] = "0" * 64
    with pytest.raises(DownloadError) as excinfo:
        download(data_dir, mirrors.urls, files, checksums=checksums)
    message = str(excinfo.value)
    assert "\n" not in message
    assert f"could not download {TRAIN_IMAGES}.gz" in message
    assert f"{mirrors.urls[0]}: SHA-256 mismatch; {mirrors.urls[1]}: SHA-256 mismatch" in message
    assert str(data_dir) in message and "--data-dir" in message
    assert list(data_dir.iterdir()) == []  # train-images is fetched first; no temp files left


def test_every_mirror_failing_differently(data_dir, mirrors, files):
    mirrors.put("m2", f"{TRAIN_IMAGES}.gz", b"<html>not found</html>")
    with pytest.raises(DownloadError) as excinfo:
        download(data_dir, mirrors.urls, files)
    message = str(excinfo.value)
    assert f"{mirrors.urls[0]}: HTTP 404; {mirrors.urls[1]}: not a gzip file" in message
    assert list(data_dir.iterdir()) == []


def test_existing_files_are_not_downloaded_again(data_dir, mirrors, files):
    mirrors.put_all("m1", files)
    present = [MNIST_NAMES["train_labels"], MNIST_NAMES["test_images"]]
    write_mnist_dir(
        data_dir, {name: files[name] for name in present[:1]}, gz=True
    )  # creates data_dir
    write_mnist_dir(data_dir, {name: files[name] for name in present[1:]}, gz=False)
    download(data_dir, mirrors.urls, files)
    assert sorted(mirrors.requests) == sorted(
        f"/m1/{name}.gz" for name in files if name not in present
    )
    download(data_dir, mirrors.urls, files)
    assert len(mirrors.requests) == 2


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connection_refused(data_dir, files):
    url = f"http://127.0.0.1:{closed_port()}/"
    with pytest.raises(DownloadError) as excinfo:
        download(data_dir, (url,), files)
    message = str(excinfo.value)
    assert "\n" not in message and f"{TRAIN_IMAGES}.gz ({url}: " in message
    assert list(data_dir.iterdir()) == []


def test_silent_server_times_out(data_dir, files):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        with pytest.raises(DownloadError, match="no data for 0.3 s"):
            download(data_dir, (url,), files, idle_timeout=0.3)
    assert list(data_dir.iterdir()) == []


def test_read_data_sets_downloads_into_named_folder(tmp_path, mirrors, files, monkeypatch):
    mirrors.put_all("m1", files)
    monkeypatch.setitem(datasets.REGISTRY, "mnist", served_mnist(mirrors.urls, files))
    sets = data.read_data_sets(tmp_path / "fresh", validation_size=2, rng=np.random.default_rng(0))
    assert (sets.train.num_examples, sets.validation.num_examples, sets.test.num_examples) == (
        10,
        2,
        5,
    )
    assert_downloaded(tmp_path / "fresh", files)


def test_read_data_sets_without_download_makes_no_request(tmp_path, mirrors, files, monkeypatch):
    mirrors.put_all("m1", files)
    monkeypatch.setitem(datasets.REGISTRY, "mnist", served_mnist(mirrors.urls, files))
    with pytest.raises(DataError, match="downloading is off"):
        data.read_data_sets(tmp_path, download=False)
    assert mirrors.requests == []


def test_implicit_local_folder_is_never_downloaded_into(tmp_path, mirrors, files, monkeypatch):
    mirrors.put_all("m1", files)
    monkeypatch.setitem(datasets.REGISTRY, "mnist", served_mnist(mirrors.urls, files))
    monkeypatch.delenv("MNISTC_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    with pytest.raises(DataError, match="never downloaded into"):
        data.read_data_sets()
    assert mirrors.requests == []


# ----------------------------------------------------------------------------------
# Mirrors that misbehave slowly: a scripted local server


@pytest.fixture
def scripted():
    """serve(behaviour) -> a mirror URL whose every GET runs behaviour(handler, stop);
    `stop` (a threading.Event) is set when the test ends."""
    stop = threading.Event()
    servers = []

    def serve(behaviour):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                try:
                    behaviour(self, stop)
                except OSError:  # the client went away
                    pass

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    stop.set()
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


def trickle_body(handler, stop):
    """Headers at once, then one byte every 50 ms, forever."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000000")
    handler.end_headers()
    while not stop.wait(0.05):
        handler.wfile.write(b"\x1f")
        handler.wfile.flush()


def trickle_headers(handler, stop):
    """A status line, then one byte of an endless header every 50 ms."""
    handler.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
    while not stop.wait(0.05):
        handler.wfile.write(b"x")
        handler.wfile.flush()


def silent_after_headers(handler, stop):
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.flush()
    stop.wait(30)


def slowly(content, seconds):
    """Serve `content` in 20 pieces spread over `seconds`."""

    def behaviour(handler, stop):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        piece = -(-len(content) // 20)
        for start in range(0, len(content), piece):
            handler.wfile.write(content[start : start + piece])
            handler.wfile.flush()
            if stop.wait(seconds / 20):
                return

    return behaviour


@pytest.mark.parametrize("behaviour", [trickle_body, trickle_headers])
def test_a_trickling_mirror_hits_the_deadline(data_dir, files, scripted, behaviour):
    """A byte every 50 ms never trips a 1 s idle timeout; the 0.5 s deadline ends it, in
    the headers as in the body, and the next mirror (here: none) is tried."""
    url = scripted(behaviour)
    with pytest.raises(DownloadError, match=rf"{url}: not finished after 0.5 s"):
        download(data_dir, (url,), files, idle_timeout=1.0, deadline=0.5)
    assert list(data_dir.iterdir()) == []


def test_a_mirror_that_stops_sending_hits_the_idle_timeout(data_dir, files, scripted):
    url = scripted(silent_after_headers)
    with pytest.raises(DownloadError, match=rf"{url}: no data for 0.3 s"):
        download(data_dir, (url,), files, idle_timeout=0.3)
    assert list(data_dir.iterdir()) == []


def test_a_deadline_falls_through_to_the_next_mirror(data_dir, files, scripted, mirrors):
    mirrors.put_all("m2", files)
    slow = scripted(trickle_body)
    download(data_dir, (slow, mirrors.urls[1]), files, idle_timeout=1.0, deadline=0.3)
    assert_downloaded(data_dir, files)


def test_a_download_longer_than_a_second_reports_progress(
    tmp_path, files, scripted, monkeypatch, capsys
):
    """Training passes mnistc.download.stderr_progress: on a non-TTY stderr, one line when
    a file has taken over a second and one when it is done."""
    from mnistc.config import TrainConfig
    from mnistc.training import run_training

    slow = {TRAIN_IMAGES: gzip.compress(files[TRAIN_IMAGES], mtime=0)}

    def behaviour(handler, stop):
        name = handler.path.rsplit("/", 1)[-1][: -len(".gz")]
        content = slow.get(name) or gzip.compress(files[name], mtime=0)
        slowly(content, 1.3 if name in slow else 0.0)(handler, stop)

    url = scripted(behaviour)
    monkeypatch.setitem(datasets.REGISTRY, "mnist", served_mnist([url], files))
    run_training(
        TrainConfig(
            data_dir=str(tmp_path / "mnist"),
            validation_size=2,
            hidden=(4,),
            batch_size=5,
            max_steps=1,
            train_dir=str(tmp_path / "run"),
            tensorboard=False,
        )
    )
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"mnistc: downloading {TRAIN_IMAGES}.gz: in progress"
    assert re.fullmatch(
        rf"mnistc: downloading {TRAIN_IMAGES}\.gz: done, 0\.0 of 0\.0 MB in "
        r"1\.\d s",
        err[1],
    ), err
    assert len(err) == 2  # the other files took no second


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupting_a_download_leaves_no_temp_file(tmp_path, files, scripted, signum, status):
    """A real `mnistc.train` process downloading from a trickling mirror, interrupted: it
    exits with the signal's status and leaves the data folder as it found it."""
    url = scripted(trickle_body)
    data_dir = tmp_path / "mnist"
    setup = (
        f"from mnistc import datasets\n"
        f"datasets.REGISTRY['mnist'] = datasets.MNIST._replace(mirrors=({url!r},))\n"
        f"import sys\nfrom mnistc.cli.train import main\nsys.argv[0] = 'mnistc.train'\n"
        f"sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            setup,
            "--data-dir",
            str(data_dir),
            "--train-dir",
            str(tmp_path / "run"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tool_env(),
    )
    deadline = time.monotonic() + 30
    while not (data_dir.is_dir() and any(data_dir.iterdir())):  # the temp file is there
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.02)
    time.sleep(0.3)  # well into the trickle
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == status, (proc.returncode, err)
    assert "Traceback" not in err
    assert list(data_dir.iterdir()) == []
