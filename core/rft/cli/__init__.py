"""The `rft` command-line tool (typer + rich). `main` is the console script's entry point."""

from rft.cli.app import app, main

__all__ = ["app", "main"]
