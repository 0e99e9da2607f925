"""Every error shopmind raises, in one place.

    ShopmindError
    ├── ConfigError            settings or key files are missing or wrong
    ├── InvalidInputError      a request or file does not fit the contract (HTTP 422, CLI exit 2)
    │   ├── BatchValidationError   one or more rows of a batch are invalid; lists each row and field
    │   └── BudgetExceededError    a private release would overspend its purpose's privacy budget
    ├── NotFoundError          the thing asked for does not exist (HTTP 404)
    ├── AuthError              missing or unknown API key (HTTP 401)
    │   └── ScopeError         the key lacks the scope the route needs (HTTP 403)
    ├── StorageError           the database or cache failed; the operation was not applied
    └── NotFittedError         a model was used before `fit`

Third-party errors are wrapped at the boundary (`raise StorageError(...) from exc`).
Messages never contain raw user identifiers or personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ShopmindError(Exception):
    """Base of every shopmind error."""


class ConfigError(ShopmindError):
    """Settings, key files or environment are missing or inconsistent."""


class InvalidInputError(ShopmindError):
    """Input does not fit the contract. `field` names the offending field when known."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class RowError:
    """One problem in one row of a batch."""

    index: int
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


class BatchValidationError(InvalidInputError):
    """One or more rows are invalid; nothing of the batch was written."""

    def __init__(self, errors: list[RowError], kind: str = "row", source: str | None = None):
        self.errors = errors
        shown = "; ".join(f"{kind} {e.index}: {e.field}: {e.message}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        where = f"{source}: " if source else ""  # the file, when the rows came from one
        super().__init__(f"{where}{len(errors)} invalid {kind}(s), nothing was written: {shown}{more}")


class BudgetExceededError(InvalidInputError):
    """A differentially private release would spend more epsilon (or delta) than its purpose has left;
    nothing was released or recorded."""

    def __init__(self, purpose: str, remaining: float, requested: float, unit: str = "epsilon"):
        self.purpose, self.remaining, self.requested = purpose, remaining, requested
        super().__init__(f"privacy budget of {purpose!r} exhausted: {unit} {requested:g} requested, "
                         f"{remaining:g} remaining; nothing was released", field=unit)


class BodyTooLarge(InvalidInputError):
    """A request body past the service's limit (HTTP 413)."""


class NotFoundError(ShopmindError):
    """The requested object does not exist."""


class AuthError(ShopmindError):
    """Missing, malformed, revoked or unknown API key."""


class ScopeError(AuthError):
    """The API key is valid but lacks the required scope."""


class StorageError(ShopmindError):
    """A storage backend failed; the operation was not applied."""


class NotFittedError(ShopmindError, AttributeError):
    """A model was used before it was fitted (like scikit-learn's NotFittedError)."""


__all__ = [
    "AuthError",
    "BatchValidationError",
    "BodyTooLarge",
    "BudgetExceededError",
    "ConfigError",
    "InvalidInputError",
    "NotFittedError",
    "NotFoundError",
    "RowError",
    "ScopeError",
    "ShopmindError",
    "StorageError",
]
