"""`python -m mnistc.train`: runs mnistc.cli.train.main (see there)."""

if __name__ == "__main__":
    import sys

    from mnistc.cli.train import main

    sys.exit(main())
