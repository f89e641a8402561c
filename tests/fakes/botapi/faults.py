"""Scripted failures: error answers Telegram gives, and what a broken proxy in front of it gives
(nginx's HTML error pages, a page that is not JSON, a redirect loop, a success no client can read).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.fakes.botapi.calls import ApiCall, ApiError, JSONDict
from tests.fakes.botapi.chats import Chats
from tests.fakes.botapi.limits import RATE_LIMITED_METHODS


@dataclass(slots=True)
class _Fault:
    method: str | None  # lower case; None: any rate-limited (sending or editing) method
    chat_id: int | None  # None: any chat
    error_code: int
    description: str
    parameters: JSONDict | None
    times: int
    body: str | None  # answered as it is, as an HTML page, instead of Bot API JSON


class RawError(Exception):
    """A non-JSON answer, like the HTML page of a 502 from Telegram's nginx."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class Faults:
    def __init__(self, chats: Chats) -> None:
        self._chats = chats
        self._queue: list[_Fault] = []
        self._redirects: dict[str, int] = {}
        self._odd_successes: dict[str, int] = {}

    def add(
        self,
        method: str | None,
        chat_id: int | None,
        error_code: int,
        description: str,
        *,
        parameters: JSONDict | None = None,
        times: int = 1,
        body: str | None = None,
    ) -> None:
        name = method.lower() if method is not None else None
        self._queue.append(_Fault(name, chat_id, error_code, description, parameters, times, body))

    def server_error(self, method: str, times: int, status: int) -> None:
        # Telegram's backend answers 500 in JSON; its nginx front answers 502/504 with a page.
        body = None if status == 500 else _nginx_page(status)
        self.add(method, None, status, "Internal Server Error", times=times, body=body)

    def clear(self) -> None:
        """Drop the scripted error answers not consumed yet (redirects and odd successes stay)."""
        self._queue.clear()

    def add_redirect(self, method: str, times: int) -> None:
        self._redirects[method] = self._redirects.get(method, 0) + times

    def add_odd_success(self, method: str, times: int) -> None:
        self._odd_successes[method] = self._odd_successes.get(method, 0) + times

    def take_redirect(self, method: str) -> bool:
        return _take(self._redirects, method)

    def take_odd_success(self, method: str) -> bool:
        return _take(self._odd_successes, method)

    def apply(self, call: ApiCall) -> None:
        """Answer ``call`` with the first queued fault that matches it, if any."""
        raw_chat = call.params.get("chat_id")
        for fault in self._queue:
            if fault.method is None:
                if call.method not in RATE_LIMITED_METHODS:
                    continue
            elif call.method.lower() != fault.method:
                continue
            if fault.chat_id is not None and (
                raw_chat is None or self._chats.id_of(raw_chat) != fault.chat_id
            ):
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._queue.remove(fault)
            if fault.body is not None:
                raise RawError(fault.error_code, fault.body)
            raise ApiError(fault.error_code, fault.description, fault.parameters)


def _take(counts: dict[str, int], method: str) -> bool:
    if counts.get(method, 0) <= 0:
        return False
    counts[method] -= 1
    return True


def _nginx_page(status: int) -> str:
    reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Time-out"}.get(
        status, "Error"
    )
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
