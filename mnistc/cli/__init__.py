"""mnistc's command lines, one module each: `python -m mnistc.<tool>` runs
mnistc.cli.<tool>.main (mnistc/<tool>.py is only that entry point, so that the Python API
names mnistc.train() and mnistc.plot() stay functions)."""
