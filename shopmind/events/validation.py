"""Validate a batch of rows against its schema, reporting every bad row by index and field."""

from __future__ import annotations

from typing import Any, Sequence

from pydantic import BaseModel, ValidationError

from shopmind.events.schemas import ROW_MODELS
from shopmind.exceptions import BatchValidationError, InvalidInputError, RowError


def _field_and_message(error: dict[str, Any]) -> tuple[str, str]:
    loc = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    # Cross-field checks name their field as "field: message" (pydantic gives them no location).
    if not loc and ": " in message:
        loc, message = message.split(": ", 1)
    return loc or "row", message


def validate_rows(kind: str, rows: Sequence[dict[str, Any]], max_rows: int, unique_ids: bool = True) -> list[BaseModel]:
    """Return validated models, or raise BatchValidationError listing each invalid row. `unique_ids=False`
    leaves the check that no item or user id is given twice to the caller (a file checks it whole)."""
    model = ROW_MODELS.get(kind)
    if model is None:
        raise InvalidInputError(f"unknown kind {kind!r}: expected one of {sorted(ROW_MODELS)}", field="kind")
    if len(rows) > max_rows:
        raise InvalidInputError(f"batch has {len(rows)} rows; at most {max_rows} are accepted per batch", field="rows")
    valid: list[BaseModel] = []
    errors: list[RowError] = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            errors.append(RowError(index, "row", "must be an object"))
            continue
        try:
            valid.append(model.model_validate(row))
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                field, message = _field_and_message(err)
                errors.append(RowError(index, field, message))
    if errors:
        raise BatchValidationError(errors)
    if unique_ids:
        check_unique_ids(kind, valid)
    return valid


UNIQUE_IDS = {"items": "item_id", "users": "user_id"}


def check_unique_ids(kind: str, rows: Sequence[BaseModel]) -> None:
    """Raise BatchValidationError when an item or user id is given twice in one batch of validated rows.

    The same id twice is ambiguous for profile data (which one wins?). Part of `validate_rows`; the HTTP
    routes, whose rows FastAPI validates while parsing, call it themselves."""
    errors = duplicate_ids(kind, rows, {})
    if errors:
        raise BatchValidationError(errors)


def duplicate_ids(kind: str, rows: Sequence[BaseModel], seen: dict[str, int], numbers: Sequence[int] | None = None,
                  scope: str = "batch", label: str = "row") -> list[RowError]:
    """An error for each row whose item or user id an earlier row gave; rows are numbered by `numbers`
    (where a file's rows are, see events.files) or from 0. `seen` maps each id to its first row's number
    and is updated, so a file read in chunks is checked whole."""
    id_field = UNIQUE_IDS.get(kind)
    if id_field is None:
        return []
    errors: list[RowError] = []
    for position, m in enumerate(rows):
        index = numbers[position] if numbers is not None else position
        first = seen.setdefault(getattr(m, id_field), index)
        if first != index:
            errors.append(RowError(index, id_field, f"duplicate of {label} {first} in the same {scope}"))
    return errors
