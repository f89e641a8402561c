"""The one button-data codec: what it makes it accepts, what it did not make it refuses."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from handlers.views import callbacks
from handlers.views import readers as reader_views
from handlers.views.callbacks import LANGUAGE, PANEL, PANEL_LIST, SEARCH_PAGE, SUBSCRIPTION, Family
from handlers.views.channels import cb, list_data, parse_callback

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = [LANGUAGE, SEARCH_PAGE, SUBSCRIPTION, PANEL_LIST, PANEL]


def test_every_button_the_bot_makes_decodes_to_what_it_said() -> None:
    assert reader_views.parse_language_data(reader_views.language_data("az", "start")) == (
        "az",
        "start",
    )
    assert reader_views.parse_language_data(reader_views.language_data("ru")) == ("ru", "")
    key = "AbC-_0123456"
    assert reader_views.parse_search_data(reader_views.search_data(12, "a", key)) == (12, "a", key)
    assert reader_views.parse_settings_data(reader_views.settings_data(True)) is True
    assert reader_views.parse_settings_data(reader_views.settings_data(False)) is False
    assert parse_callback(cb(-1001234567890, "flt", "+ic")) is not None
    press = parse_callback(list_data())
    assert press is not None and press.action == "list" and press.chat_id is None


@pytest.mark.parametrize(
    "data",
    [
        None,
        "",
        "lang",
        "lang:",
        "lang:xx",  # no such language
        "lang:en:",
        "lang:en:other",
        "lang:en:start:more",
        "s:0:l:AbC-_0123456",  # pages count from 1
        "s:1:x:AbC-_0123456",
        "s:1:l:short",
        "s:1:l:AbC-_0123456\n",
        "set:sub:maybe",
        "set:sub",
        "ch:list:extra",
        "ch:12:nosuchaction",
        "ch:12:open:arg",  # "open" takes no argument
        "ch:" + "9" * 20 + ":open",  # no Telegram chat has such an id
        "ch:1:flt:-ic." + "0" * 40,  # over 64 bytes
        "ch:1:OPEN",
        "😀",
    ],
)
def test_data_the_bot_did_not_make_is_refused(data: str | None) -> None:
    assert reader_views.parse_language_data(data) is None
    assert reader_views.parse_search_data(data) is None
    assert reader_views.parse_settings_data(data) is None
    assert parse_callback(data or "") is None


def test_no_two_families_claim_the_same_data() -> None:
    samples = [
        LANGUAGE.encode("en", "set"),
        SEARCH_PAGE.encode(3, "l", "AbC-_0123456"),
        SUBSCRIPTION.encode("sub", "on"),
        PANEL_LIST.encode("list"),
        PANEL.encode(-100, "lang", "ru"),
    ]
    for data in samples:
        claimed = [family.prefix for family in FAMILIES if family.decode(data) is not None]
        assert len(claimed) == 1, (data, claimed)


def test_the_bot_cannot_make_a_button_it_would_refuse() -> None:
    with pytest.raises(ValueError, match="refuse"):
        SEARCH_PAGE.encode(0, "l", "AbC-_0123456")
    with pytest.raises(ValueError, match="refuse"):
        PANEL.encode(1, "flt", "-ic." + "0" * 60)  # would pass Telegram's 64 bytes
    with pytest.raises(ValueError):
        Family("x", "a", optional=2)


def test_optional_fields_nest() -> None:
    family = Family("t", "a", "b", "c", optional=2)
    assert family.decode("t:a") == ("a", "", "")
    assert family.decode("t:a:b") == ("a", "b", "")
    assert family.decode("t:a:b:c") == ("a", "b", "c")
    assert family.decode("t:a:c") is None
    assert family.encode("a", "b", "") == "t:a:b"


def test_no_handler_or_view_writes_button_data_by_hand() -> None:
    """Every callback_data comes from a call (the codec's helpers), never a literal string."""
    offenders = []
    for path in sorted((ROOT / "handlers").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            literal = ast.Constant | ast.JoinedStr | ast.BinOp
            if (
                isinstance(node, ast.keyword)
                and node.arg == "callback_data"
                and isinstance(node.value, literal)
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.value.lineno}")
    assert offenders == []
    assert callbacks.MAX_BYTES == 64
