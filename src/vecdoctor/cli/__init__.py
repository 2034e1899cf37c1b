"""Command-line interface: each command parses options, calls the library, formats output."""

from __future__ import annotations

from vecdoctor.cli import _commands  # noqa: F401  (registers every command)
from vecdoctor.cli._app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
