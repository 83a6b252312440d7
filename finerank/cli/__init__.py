"""The ``finerank`` command line, one module per command group; the entry point is :func:`finerank.cli.app.main`."""
