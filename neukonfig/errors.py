"""One exception tree for the whole project.

Every error carries the HTTP status a service would answer with, so a FastAPI
handler and the CLI can both turn it into one clear line. Low-level errors
(onnx, onnxruntime, httpx, OS) are wrapped at the boundary with ``raise ... from e``.
"""

from __future__ import annotations


class NeukonfigError(Exception):
    """Base of every error this project raises on purpose."""

    status_code: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidModelError(NeukonfigError):
    """The file is not a readable, well-formed ONNX model."""


class UnsupportedModelError(NeukonfigError):
    """A well-formed model that uses something neukonfig does not handle."""


class UnknownModelError(NeukonfigError):
    """A model name that is not in the zoo or not served here."""

    status_code = 404


class CutNotFoundError(NeukonfigError):
    """A cut index or tensor name that does not exist in the model."""

    status_code = 404


class InvalidCutError(NeukonfigError):
    """A tensor that exists but is not a valid single-tensor cut point."""


class OutputDirConflictError(NeukonfigError):
    """The output directory already holds partitions of a different model."""

    status_code = 409


class VerificationError(NeukonfigError):
    """Head followed by tail did not reproduce the full model's outputs."""

    status_code = 500
