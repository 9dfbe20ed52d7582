"""`python -m mnistc.predict`: runs mnistc.cli.predict.main (see there)."""

if __name__ == "__main__":
    import sys

    from mnistc.cli.predict import main

    sys.exit(main())
