"""A post's request body and the reading of its answer: the JSON the sender writes is the
parameters it was given, and an accepted answer yields the message's id whatever else it
carries, while anything that is not plainly an accepted send is read whole."""

from __future__ import annotations

import json

import pytest

from bot.delivery.ratelimit import BotApiRequest, JsonBody, watch_accepted

LONG = '«Azərbaycan» <b>"quoted"</b> — ' * 20  # over the length whose encoding is kept


@pytest.mark.parametrize(
    "params",
    [
        {"chat_id": -100123, "text": LONG, "parse_mode": "HTML", "disable_notification": False,
         "link_preview_options": {"url": "https://caliber.az/en/x", "prefer_large_media": True}},
        {"text": LONG},
        {"chat_id": 5, "photo": "https://caliber.az/" + "p" * 250, "caption": LONG},
        {"chat_id": 5, "text": "short", "message_thread_id": None},
    ],
)  # fmt: skip
def test_a_body_is_its_parameters_as_json_without_the_unset_ones(params: dict) -> None:  # type: ignore[type-arg]
    body = JsonBody(params).body
    assert json.loads(body) == {k: v for k, v in params.items() if v is not None}
    assert JsonBody(params).body == body  # the second body, with the kept encoding, is the same


@pytest.mark.parametrize(
    ("answer", "message_id"),
    [
        (b'{"ok":true,"result":{"message_id":4711,"date":1,"chat":{"id":5}}}', 4711),
        (b'{"ok": true, "result": {"message_id": 12, "text": "x"}}', 12),
        (b'{"ok":true,"result":{"date":1,"message_id":99}}', 99),  # another order: read whole
    ],
)
def test_an_accepted_send_yields_its_message_id(answer: bytes, message_id: int) -> None:
    request = BotApiRequest()
    with watch_accepted(lean=True) as accepted:
        data = request.parse_json_payload(answer)
    assert data["ok"] is True and data["result"]["message_id"] == message_id
    assert accepted.ok and accepted.result["message_id"] == message_id


def test_a_refusal_and_a_full_read_are_parsed_whole() -> None:
    request = BotApiRequest()
    refusal = b'{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked"}'
    with watch_accepted(lean=True) as accepted:
        assert request.parse_json_payload(refusal)["error_code"] == 403
    assert not accepted.ok
    whole = b'{"ok":true,"result":{"message_id":7,"chat":{"id":5,"type":"private"}}}'
    with watch_accepted() as accepted:  # not lean: the caller builds a Message of it
        assert request.parse_json_payload(whole)["result"]["chat"] == {"id": 5, "type": "private"}
