"""`python -m mnistc.plot`: runs mnistc.cli.plot.main (see there)."""

if __name__ == "__main__":
    import sys

    from mnistc.cli.plot import main

    sys.exit(main())
