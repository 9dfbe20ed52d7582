"""`python -m mnistc.export`: runs mnistc.cli.export.main (see there)."""

if __name__ == "__main__":
    import sys

    from mnistc.cli.export import main

    sys.exit(main())
