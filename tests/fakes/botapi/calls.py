"""What every part of the fake shares: the record of one request and the errors that answer it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

JSONDict = dict[str, Any]
_T = TypeVar("_T")


@dataclass(slots=True)
class ApiCall:
    """One request to the fake and the answer it got.

    ``status`` stays ``None`` while the answer is pending (a long poll).
    """

    method: str
    params: JSONDict
    at: float
    ok: bool = False
    status: int | None = None
    error_code: int | None = None
    description: str | None = None
    parameters: JSONDict | None = None
    result: Any = None

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")

    @property
    def text(self) -> str | None:
        """The raw (unparsed) text or caption that was sent."""
        value = self.params.get("text", self.params.get("caption"))
        return value if isinstance(value, str) else None

    def __str__(self) -> str:
        answer = "pending" if self.status is None else "ok" if self.ok else f"{self.error_code}"
        detail = f" {self.description}" if self.description else ""
        return f"{self.method}(chat_id={self.chat_id!r}) -> {answer}{detail}"


#: A Bot API method: takes the call, returns the result or raises ApiError.
Handler = Callable[[ApiCall], Any]


class ApiError(Exception):
    """Raised inside handlers to produce a Bot API error answer."""

    def __init__(
        self, error_code: int, description: str, parameters: JSONDict | None = None
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters


def bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


def json_copy(value: _T) -> _T:
    # Answers must not alias the stored state a later call mutates; the data is JSON-shaped,
    # and a JSON round trip is the cheapest faithful deep copy of it.
    return cast(_T, json.loads(json.dumps(value)))
