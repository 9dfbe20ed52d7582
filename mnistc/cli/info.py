"""`python -m mnistc.info`: how this mnistc was built and what it runs on."""

import sys

from .. import runtime
from . import _common


def main(argv=None):
    parser = _common.Parser(prog="mnistc.info", description=__doc__.split(":", 1)[1].strip())
    parser.parse_args(argv)
    return _common.run(parser, lambda: print(runtime.config_text()))


if __name__ == "__main__":
    sys.exit(main())
