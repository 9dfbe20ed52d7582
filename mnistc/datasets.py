"""The registry of data sets mnistc can train on, and where their files are found.

Each entry is a 28x28-grayscale IDX data set laid out as MNIST is (train and test images
and labels, four files, raw or gzip): its file names, the SHA-256 of each decompressed
file, the mirrors to download from and its class names. Adding another such data set is
one entry in REGISTRY.
"""

import os
import pathlib
from typing import NamedTuple

from .errors import DataError

SPLIT_FILES = ("train_images", "train_labels", "test_images", "test_labels")


class DatasetSpec(NamedTuple):
    name: str
    title: str
    files: dict  # SPLIT_FILES key -> file name without .gz
    sha256: dict  # file name -> SHA-256 of the decompressed file
    mirrors: tuple  # URL prefixes; a file is fetched as <mirror><file>.gz
    class_names: tuple
    image_shape: tuple = (28, 28)

    @property
    def image_pixels(self):
        return self.image_shape[0] * self.image_shape[1]

    @property
    def num_classes(self):
        return len(self.class_names)


def _sha256sums(text):
    """{file name: SHA-256} from the lines of a SHA256SUMS file ("<hex>  <name>")."""
    return {name: digest for digest, name in (line.split() for line in text.strip().splitlines())}


_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    files=_MNIST_FILES,
    sha256=_sha256sums("""
        0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  t10k-images-idx3-ubyte
        ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  t10k-labels-idx1-ubyte
        ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  train-images-idx3-ubyte
        65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  train-labels-idx1-ubyte
    """),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    class_names=tuple(str(d) for d in range(10)),
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    files=_MNIST_FILES,
    sha256=_sha256sums("""
        5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b  t10k-images-idx3-ubyte
        0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34  t10k-labels-idx1-ubyte
        c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888  train-images-idx3-ubyte
        bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9  train-labels-idx1-ubyte
    """),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
)

REGISTRY = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}
DEFAULT = MNIST.name


def get(name):
    """The DatasetSpec called `name`; ValueError listing the known ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown data set {name!r}; expected one of {', '.join(REGISTRY)}"
        ) from None


def resolve_data_dir(spec, data_dir=None):
    """Where a data set's files live, and whether missing ones may be downloaded there.

    In order: `data_dir` if given, else $MNISTC_DATA_DIR (MNIST only: the variable predates
    the registry), else ./data/<name> if it exists, else $XDG_CACHE_HOME/mnistc/<name>
    (default ~/.cache/mnistc/<name>). Returns (directory, may_download): a folder the user
    named and the cache may be filled by download; ./data/<name>, found implicitly in the
    working directory, is never written to.
    """
    if data_dir is not None:
        return pathlib.Path(data_dir).expanduser(), True
    if spec.name == MNIST.name and os.environ.get("MNISTC_DATA_DIR"):
        return pathlib.Path(os.environ["MNISTC_DATA_DIR"]).expanduser(), True
    local = pathlib.Path("data", spec.name)
    if local.is_dir():
        return local, False
    cache_home = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(cache_home, "mnistc", spec.name), True


def local_file(data_dir, name):
    """The raw file if present, else name.gz if present, else None."""
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_files(spec, data_dir):
    return [name for name in spec.files.values() if local_file(data_dir, name) is None]


def verify_checksums(spec, data_dir):
    """Check the SHA-256 of the decompressed content of the data set's files in
    `data_dir` (raw or .gz); DataError on the first missing or mismatching one."""
    from .idx import GZIP_ERRORS, sha256_of_content

    data_dir = pathlib.Path(data_dir)
    for name in spec.files.values():
        path = local_file(data_dir, name)
        if path is None:
            raise DataError(f"{data_dir / name}: missing (neither {name} nor {name}.gz exists)")
        try:
            digest = sha256_of_content(path)
        except GZIP_ERRORS as error:
            raise DataError(f"{path}: cannot read: {error}") from None
        if digest != spec.sha256[name]:
            raise DataError(
                f"{path}: SHA-256 of the content is {digest}, expected {spec.sha256[name]}"
            )
