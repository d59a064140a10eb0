"""The command line: commands and tables; the one place that prints and exits."""

from pipeline.cli.app import app, main

__all__ = ["app", "main"]
