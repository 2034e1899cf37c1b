"""Exceptions that the CLI turns into one clean line and exit code 1."""

from __future__ import annotations


class VecdoctorError(Exception):
    """Base class for user-facing errors: the message says what is wrong and how to fix it."""


class InputError(VecdoctorError, ValueError):
    """A file, corpus, query or option given by the user is invalid."""


class ModelNotAvailableError(VecdoctorError, LookupError):
    """A model cannot be loaded offline; the message names the package or folder needed."""


class IncompatibleError(VecdoctorError, ValueError):
    """A saved object (transform, index, quantizer) does not match what it is used with."""


class MissingExtraError(VecdoctorError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install vecdoctor[extra]``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"{module} is not installed; install it with: pip install 'vecdoctor[{extra}]'"
        ) from exc
