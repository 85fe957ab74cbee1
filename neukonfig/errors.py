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


class WireFormatError(NeukonfigError):
    """A tensor frame that is malformed, or whose tensors do not match what the receiver
    expects (``neukonfig.wire``, ``neukonfig.codecs``)."""


class VerificationError(NeukonfigError):
    """Head followed by tail did not reproduce the full model's outputs."""

    status_code = 500


class PayloadTooLargeError(NeukonfigError):
    """A request body or tensor over the configured limit."""

    status_code = 413


class BodyTimeoutError(NeukonfigError):
    """The request body did not arrive in time (a stalled or slow-drip client)."""

    status_code = 408


class UnauthorizedError(NeukonfigError):
    """A control-plane call without the right token."""

    status_code = 401


class ConflictError(NeukonfigError):
    """A request that conflicts with current state (e.g. retiring the active pipeline)."""

    status_code = 409


class NotReadyError(NeukonfigError):
    """The service cannot serve yet (no session, or no active pipeline)."""

    status_code = 503


class OverloadedError(NeukonfigError):
    """More work is waiting than can finish in time: refused at once, with when to retry,
    rather than queued into a timeout."""

    status_code = 503

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamError(NeukonfigError):
    """A peer service (edge or cloud partition) failed or could not be reached."""

    status_code = 502


class UpstreamUnansweredError(UpstreamError):
    """A peer failed before sending any byte of its answer: refused the connection, or
    closed it after reading the request. Another replica may be asked once. A peer that
    died after reading the request may have run it, so the retry can run an inference
    twice: harmless for inference (no side effects), it only costs compute."""


class UpstreamTimeoutError(UpstreamError):
    """A peer service did not answer within its stage timeout."""

    status_code = 504


class EdgeMemoryError(NeukonfigError):
    """A new pipeline would not fit in the edge's memory budget: refused before it starts."""

    status_code = 409


class InvalidUnitError(NeukonfigError):
    """A bandwidth or duration that is not a positive number with a known unit."""


class InvalidProfileError(NeukonfigError):
    """A profile file that cannot be read or does not follow the profile schema."""


class ProfileMismatchError(NeukonfigError):
    """A profile that does not describe this partition directory (model, role or cuts)."""

    status_code = 409
