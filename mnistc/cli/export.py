"""`python -m mnistc.export`: write a trained checkpoint as an ONNX model.

The model takes uint8 images [N, 784] (input `images`, the 1/255 scaling inside the
graph) and gives `logits` and `probabilities` [N, classes]; its metadata names the mnistc
version, the step, the data set and the class names (mnistc.onnx_export). Needs the onnx
package: pip install "mnistc[onnx]".
"""

import argparse
import sys

from .. import onnx_export
from . import _common


def step_number(text):
    """argparse type of --step: a checkpoint's global step, >= 0."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a step number, got {text!r}")
    return int(text)


def build_parser():
    p = _common.Parser(
        prog="mnistc.export",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common.add_checkpoint_options(p)
    p.add_argument(
        "--step",
        dest="checkpoint",
        type=step_number,
        metavar="N",
        help="export checkpoint-N of --train-dir (same as --checkpoint N)",
    )
    p.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="FILE.onnx",
        help="the ONNX file to write (replaced atomically)",
    )
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    def command():
        model = _common.load_from_args(args)
        onnx_export.save(onnx_export.to_onnx(model), args.output)
        print(
            f"Wrote {args.output}: {'-'.join(map(str, model.sizes))} MLP, step "
            f"{model.global_step}, {model.meta.dataset}, ONNX opset {onnx_export.OPSET}"
        )

    return _common.run(parser, command)


if __name__ == "__main__":
    sys.exit(main())
