"""The store's errors (each maps to one HTTP status)."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's errors."""


class NotFound(StoreError):
    """No such endpoint or operation (HTTP 404)."""


class Conflict(StoreError):
    """The request contradicts the current state (HTTP 409)."""


class IdempotencyMismatch(StoreError):
    """An Idempotency-Key was reused for a different request (HTTP 422)."""


class QuotaExceeded(StoreError):
    """The caller's quota does not allow the request (HTTP 429).

    Attributes:
        quota: Which limit (``endpoints``, ``accelerators``, ``cost_per_hour``,
            ``queued``).
    """

    def __init__(self, quota: str, message: str) -> None:
        super().__init__(message)
        self.quota = quota
