"""Reading the user's own images: 28x28 grayscale PGM, PNG and IDX files, strictly.

Small strict readers for PGM (P5/P2, our own parser), PNG (through Pillow, an optional
extra) and IDX image files; a file is recognised by its first bytes, never by its name.
Nothing is resized, cropped, centred or auto-inverted: an image that is not already a
28x28 picture like the data set's is refused with a message saying why.

Inputs, recognised by content:

* PGM, binary (P5) or plain ASCII (P2), 28x28, maxval 1..255. Samples are scaled to
  0..255 as v * 255 / maxval rounded to nearest (halves up). 16-bit PGM (maxval >
  255) is refused. Comments are allowed in the header only; one image per file.
* PNG, 28x28, bit depth <= 8, read with Pillow (``pip install "mnistc[images]"``).
  Grayscale is used as is (Pillow scales 1/2/4-bit gray to 0..255). Colour ("RGB",
  palette "P") becomes gray by Pillow's ``Image.convert("L")``, the ITU-R 601-2
  luma L = R*299/1000 + G*587/1000 + B*114/1000.
  Transparency ("RGBA", "LA", palettes with a transparent entry) is first composited
  over BLACK, the MNIST background, so a transparent canvas reads as empty
  background. 16-bit PNGs are refused rather than silently truncated.
* IDX (raw or gzip), uint8 [N, 28, 28] as in the MNIST image files: every image.

MNIST digits (and Fashion-MNIST's garments) are WHITE (255) on a BLACK (0) background.
A scan or drawing with a dark digit on white paper must be inverted: pass ``--invert``
(pixel -> 255 - pixel, applied after the conversion above). Nothing is inverted
automatically.
"""

import io

import numpy as np

from . import datasets, idx
from .errors import DataError

ROWS, COLS = datasets.MNIST.image_shape  # every registered data set's images are 28x28
PIXELS = ROWS * COLS
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PILLOW_HINT = 'reading PNG needs Pillow: pip install "mnistc[images]"'
# A 28x28 plain PGM with comments is a few KB; the cap keeps a wrong argument (a
# video, a disk image) from being read into memory before it is refused.
MAX_IMAGE_FILE_BYTES = 1 << 20
_WHITESPACE = b" \t\r\n\v\f"


# ---------------------------------------------------------------- PGM


def _pgm_header(raw, path):
    """Parse 'P5|P2 width height maxval' (comments allowed); return (fields, offset
    of the single whitespace byte that ends the header)."""
    pos, fields = 2, []
    for what in ("width", "height", "maxval"):
        start = pos
        while pos < len(raw):
            if raw[pos] in _WHITESPACE:
                pos += 1
            elif raw[pos] == ord("#"):  # a comment runs to the end of its line
                while pos < len(raw) and raw[pos] not in b"\r\n":
                    pos += 1
            else:
                break
        if pos == start:
            found = "the end of the file" if pos >= len(raw) else repr(raw[pos : pos + 8])
            raise DataError(
                f"{path}: bad PGM header: expected whitespace before the {what}, found {found}"
            )
        begin = pos
        while pos < len(raw) and 0x30 <= raw[pos] <= 0x39 and pos - begin < 10:
            pos += 1
        if pos == begin:
            found = "the end of the file" if pos >= len(raw) else repr(raw[pos : pos + 8])
            raise DataError(
                f"{path}: bad PGM header: expected the {what} (a decimal number), found {found}"
            )
        fields.append(int(raw[begin:pos]))
    if pos >= len(raw) or raw[pos] not in _WHITESPACE:
        found = "the end of the file" if pos >= len(raw) else repr(raw[pos : pos + 8])
        raise DataError(
            f"{path}: bad PGM header: expected one whitespace byte after the maxval, found {found}"
        )
    return fields, pos


def _check_pixel_count(path, found, unit):
    """A PGM body must hold exactly one 28x28 image: `found` pixel bytes or values."""
    if found < PIXELS:
        raise DataError(f"{path}: truncated PGM: expected {PIXELS} pixel {unit}, found {found}")
    if found > PIXELS:
        raise DataError(
            f"{path}: {found - PIXELS} {unit} after the {PIXELS} pixels "
            "(several images in one PGM are not supported)"
        )


def parse_pgm(raw, path="<pgm>"):
    """uint8 [28, 28] from the bytes of a P5 or P2 PGM; DataError naming `path` on any
    fault (bad header, wrong size, 16-bit, sample > maxval, short or trailing data)."""
    magic = bytes(raw[:2])
    if magic not in (b"P5", b"P2"):
        raise DataError(f"{path}: not a PGM file (starts with {magic!r}, not P5 or P2)")
    (width, height, maxval), pos = _pgm_header(raw, path)
    if maxval < 1 or maxval > 65535:
        raise DataError(f"{path}: bad PGM header: maxval {maxval} is outside 1..65535")
    if maxval > 255:
        raise DataError(
            f"{path}: 16-bit PGM (maxval {maxval}) is not supported; save it "
            "with 8 bits (maxval 255)"
        )
    if (width, height) != (COLS, ROWS):
        raise DataError(
            f"{path}: image is {width}x{height}, mnistc needs {COLS}x{ROWS} "
            "(resize and centre the digit yourself; nothing is resized here)"
        )
    body = raw[pos + 1 :]
    if magic == b"P5":
        _check_pixel_count(path, len(body), "bytes")
        pixels = np.frombuffer(bytes(body), np.uint8).astype(np.int64)
    else:
        tokens = bytes(body).split()
        _check_pixel_count(path, len(tokens), "values")
        bad = next((i for i, t in enumerate(tokens) if not t.isdigit() or len(t) > 5), None)
        if bad is not None:
            raise DataError(
                f"{path}: pixel {bad} is {tokens[bad][:12]!r}, not a decimal "
                "number (comments are allowed only in the header)"
            )
        pixels = np.array([int(t) for t in tokens], np.int64)
    over = np.flatnonzero(pixels > maxval)
    if over.size:
        i = int(over[0])
        raise DataError(f"{path}: pixel {i} is {pixels[i]}, more than the maxval {maxval}")
    if maxval != 255:  # rounded rescale to 0..255 in integers
        pixels = (pixels * 255 + maxval // 2) // maxval
    return pixels.astype(np.uint8).reshape(ROWS, COLS)


def read_pgm(path):
    """uint8 [28, 28] from a P5 or P2 PGM file (see parse_pgm)."""
    return parse_pgm(_read_capped(path), path)


# ---------------------------------------------------------------- PNG


def _png_header(raw, path):
    """(width, height, bit depth, colour type) from the IHDR chunk, checked before
    Pillow is involved so size and depth errors need no Pillow and decode nothing."""
    if len(raw) < 33 or raw[12:16] != b"IHDR" or int.from_bytes(raw[8:12], "big") != 13:
        raise DataError(f"{path}: not a valid PNG (no IHDR chunk after the signature)")
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    return width, height, raw[24], raw[25]


def _to_gray(image, path):
    """A Pillow image as uint8 [rows, cols]: the conversions the module docstring lists."""
    from PIL import Image

    mode = image.mode
    if mode == "L":
        gray = image
    elif mode in ("1", "RGB"):
        gray = image.convert("L")
    elif mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        gray = Image.alpha_composite(black, rgba).convert("L")
    elif mode == "P":
        gray = image.convert("RGB").convert("L")
    else:
        raise DataError(
            f"{path}: PNG mode {mode!r} is not supported (use 8-bit "
            "grayscale, RGB, RGBA or a palette)"
        )
    return np.asarray(gray, dtype=np.uint8)


def parse_png(raw, path="<png>"):
    """uint8 [28, 28] from the bytes of a PNG; needs Pillow. DataError on any fault."""
    if bytes(raw[:8]) != PNG_SIGNATURE:
        raise DataError(f"{path}: not a PNG file")
    width, height, depth, _ = _png_header(raw, path)
    if depth == 16:
        raise DataError(f"{path}: 16-bit PNG is not supported; save it with 8 bits per channel")
    if (width, height) != (COLS, ROWS):
        raise DataError(
            f"{path}: image is {width}x{height}, mnistc needs {COLS}x{ROWS} "
            "(resize and centre the digit yourself; nothing is resized here)"
        )
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{path}: {PILLOW_HINT}") from None
    try:
        with Image.open(io.BytesIO(bytes(raw)), formats=["PNG"]) as image:
            image.load()
            pixels = _to_gray(image, path)
    except DataError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise DataError(f"{path}: cannot decode PNG: {exc}") from None
    if pixels.shape != (ROWS, COLS):
        raise DataError(f"{path}: decoded to shape {pixels.shape}, not {ROWS}x{COLS}")
    return pixels


# ---------------------------------------------------------------- IDX and dispatch


def read_idx_file_images(path):
    """uint8 [N, 28, 28]: every image of an IDX file (raw or gzip)."""
    array = idx.read(path)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[1:] != (ROWS, COLS):
        raise DataError(
            f"{path}: IDX file holds {array.dtype} {list(array.shape)}, not "
            f"uint8 images [N, {ROWS}, {COLS}] (is it a labels file?)"
        )
    if array.shape[0] == 0:
        raise DataError(f"{path}: IDX file holds no images")
    return array


def _read_capped(path):
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_IMAGE_FILE_BYTES + 1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_IMAGE_FILE_BYTES:
        raise DataError(
            f"{path}: more than {MAX_IMAGE_FILE_BYTES} bytes; too large for a "
            f"{COLS}x{ROWS} PGM or PNG"
        )
    return raw


def _sniff(path):
    """'pgm', 'png' or 'idx' from the file's first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head[:2] in (b"P5", b"P2"):
        return "pgm"
    if head == PNG_SIGNATURE:
        return "png"
    if head[:2] == idx.GZIP_MAGIC or (len(head) >= 4 and head[:2] == b"\0\0"):
        return "idx"
    if not head:
        raise DataError(f"{path}: empty file")
    raise DataError(f"{path}: not a PGM (P5/P2), PNG or IDX image file (starts with {head[:8]!r})")


def load_images(paths, invert=False):
    """(names, uint8 images [N, 784]) for the given files, in order; an IDX file gives
    one entry per image, named "FILE[i]". `invert` maps p -> 255 - p (for dark digits
    on a light background). DataError naming the file on the first bad one."""
    names, images = [], []
    for path in paths:
        kind = _sniff(path)
        if kind == "idx":
            stack = read_idx_file_images(path)
            names.extend(f"{path}[{i}]" for i in range(stack.shape[0]))
            images.append(stack.reshape(-1, PIXELS))
            continue
        raw = _read_capped(path)
        image = parse_pgm(raw, path) if kind == "pgm" else parse_png(raw, path)
        names.append(str(path))
        images.append(image.reshape(1, PIXELS))
    stacked = np.concatenate(images) if images else np.empty((0, PIXELS), np.uint8)
    if invert:
        stacked = 255 - stacked
    return names, np.ascontiguousarray(stacked, dtype=np.uint8)


def check_model(model):
    if model.sizes[0] != PIXELS:
        where = getattr(model, "checkpoint_path", "the model")
        raise ValueError(
            f"{where}: the network takes {model.sizes[0]} inputs, not the "
            f"{PIXELS} pixels of a {COLS}x{ROWS} image"
        )


def predict_files(model, paths, invert=False, n_threads=None):
    """Classify image files; returns [(name, digit, probability)], one per image, where
    digit is the argmax of the logits (ties: lowest digit) and probability its softmax
    probability. See load_images for names and `invert`."""
    check_model(model)
    names, images = load_images(paths, invert)
    if not names:
        return []
    digits, probs = model.predict(images, n_threads)
    return [(name, int(d), float(p[d])) for name, d, p in zip(names, digits, probs)]
