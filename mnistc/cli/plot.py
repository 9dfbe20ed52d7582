"""`python -m mnistc.plot`: draw a training run as one picture.

The loss and the three precisions against the step (from the run's summaries.jsonl), the
test confusion matrix as a heat map and the most confidently misclassified test images
(mnistc.plotting). The test split is read as `python -m mnistc.eval` reads it. Needs
matplotlib: pip install "mnistc[plot]".
"""

import argparse
import sys

from .. import plotting
from . import _common


def build_parser():
    p = _common.Parser(
        prog="mnistc.plot",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common.add_checkpoint_options(p)
    _common.add_data_options(p, with_dataset=False)
    p.add_argument(
        "--output",
        "-o",
        default="run.png",
        metavar="FILE",
        help="the image to write, .png, .svg or .pdf (default: run.png; replaced atomically)",
    )
    p.add_argument(
        "--dpi", type=_common.positive_int, default=100, help="resolution of a PNG (default: 100)"
    )
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    def command():
        model = _common.load_from_args(args)
        figure = plotting.run_figure(
            args.train_dir, model, data_dir=args.data_dir, download=args.download
        )
        plotting.save_figure(figure, args.output, dpi=args.dpi)
        print(f"Wrote {args.output} (step {model.global_step}, {model.meta.dataset})")

    return _common.run(parser, command)


if __name__ == "__main__":
    sys.exit(main())
