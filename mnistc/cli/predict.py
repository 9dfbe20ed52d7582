"""`python -m mnistc.predict`: classify 28x28 grayscale images with a trained checkpoint.

One line per image: the predicted class (with its name, for a data set that has names)
and its probability. The accepted files are mnistc.images' (PGM, PNG, IDX).
"""

import argparse
import sys

import numpy as np

from .. import images, runtime
from ..errors import CheckpointError
from . import _common


def build_parser():
    p = _common.Parser(
        prog="mnistc.predict",
        description=__doc__.split("\n\n")[0],
        epilog=images.__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="28x28 PGM (P5/P2) or PNG images, or IDX image files",
    )
    _common.add_checkpoint_options(p)
    p.add_argument(
        "--dataset",
        default=None,
        help="the data set the checkpoint must have been trained on (a check)",
    )
    p.add_argument(
        "--top",
        type=int,
        default=1,
        metavar="K",
        help="also print the next K-1 most probable classes (default: 1)",
    )
    p.add_argument(
        "--invert",
        action="store_true",
        help="invert the pixels (255 - p) for dark digits on a light background;"
        " MNIST is white on black",
    )
    _common.add_threads_option(p)
    _common.add_isa_option(p)
    return p


def format_line(name, probs, top=1, class_names=None):
    """`NAME: digit D (probability P)` — `class D NAME` for a data set whose classes have
    names — then `; next: D2 (P2), ...` for top > 1. The order is by probability, ties
    by the lower class (as the argmax)."""

    def label(c):
        c = int(c)
        if class_names is None or class_names[c] == str(c):
            return f"digit {c}"
        return f"class {c} {class_names[c]}"

    order = np.argsort(-probs, kind="stable")[:top]
    line = f"{name}: {label(order[0])} (probability {probs[order[0]]:.4f})"
    if top > 1:
        line += "; next: " + ", ".join(
            f"{label(d).split(' ', 1)[1]} ({probs[d]:.4f})" for d in order[1:]
        )
    return line


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    def command():
        model = _common.load_from_args(args)
        images.check_model(model)
        if args.dataset is not None and args.dataset != model.meta.dataset:
            raise CheckpointError(
                f"{model.checkpoint_path}: was trained on {model.meta.dataset}, not {args.dataset}"
            )
        if not 1 <= args.top <= model.sizes[-1]:
            raise ValueError(f"--top must be in 1..{model.sizes[-1]}, got {args.top}")
        names, pixels = images.load_images(args.files, args.invert)
        _, probs = model.predict(pixels, runtime.resolve_threads(args.threads))
        for name, p in zip(names, probs):
            print(format_line(name, p, args.top, model.class_names))

    return _common.run(parser, command, isa=args.isa)


if __name__ == "__main__":
    sys.exit(main())
