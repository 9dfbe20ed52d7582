"""`python -m mnistc.info`: runs mnistc.cli.info.main (see there)."""

if __name__ == "__main__":
    import sys

    from mnistc.cli.info import main

    sys.exit(main())
