"""`python -m mnistc.eval`: runs mnistc.cli.eval.main (see there)."""

if __name__ == "__main__":
    import sys

    from mnistc.cli.eval import main

    sys.exit(main())
