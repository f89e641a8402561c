"""The delivery schedule's texts, buttons and screens, shared by /settings (private chats and
groups) and the /channels panel: "As they appear" or "Daily digest", the digest's hour, the
time zone, and, in private chats, quiet hours. Everything is chosen with buttons: hours from a
grid of 24, zones from a short list of named zones and pages of whole-hour UTC offsets.

A press is a Step (an operation and up to two numbers). /settings carries it in the "sc"
family ("sc:<op>[:<a>[:<b>]]"), the panel as its "sched" action's argument ("<op>[.<a>[.<b>]]");
both are parsed strictly here, and the handler re-checks the presser's rights before acting.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo

from babel.dates import get_timezone_location
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.delivery.schedule import (
    NAMED_ZONES,
    OFFSETS,
    ScheduleUpdate,
    offset_name,
)
from bot.text.i18n import N_
from bot.text.render import Markup, Renderer, bold
from handlers.views.callbacks import SCHEDULE
from storage.models import Chat, DeliveryMode

# --- messages --------------------------------------------------------------------------------
LINE_IMMEDIATE = N_("Delivery: every piece as it appears")
LINE_DIGEST = N_("Delivery: a daily digest at {time} ({zone})")
LINE_QUIET = N_("Quiet hours: {start}–{end} ({zone})")
LINE_QUIET_OFF = N_("Quiet hours: off")
DELIVERY_TITLE = N_("🗞 Delivery in {chat}")
DELIVERY_HELP = N_(
    "“As they appear”: every piece is posted on its own as soon as it appears. “Daily "
    "digest”: one message a day, at the hour you choose, with the linked titles of every piece "
    "since the last digest, grouped by category."
)
HOURS_TITLE = N_("At which hour should the daily digest come? The hours are in {zone}.")
ZONES_TITLE = N_(
    "Choose the time zone of the digest hour and of the quiet hours. Now: {zone}. Zones with "
    "a name follow their summer time; the UTC offsets never change."
)
QUIET_TITLE = N_(
    "🌙 Quiet hours: no posts between two hours. Pieces that arrive meanwhile wait and come "
    "when the quiet hours end: one by one when three or fewer waited, otherwise as one digest."
)
QUIET_FROM = N_("From which hour? The hours are in {zone}.")
QUIET_UNTIL = N_("Quiet from {start}. Until which hour?")
DEFAULT_ZONE = N_("{zone} (default)")

# --- buttons ---------------------------------------------------------------------------------
BTN_IMMEDIATE = N_("As they appear")
BTN_DIGEST = N_("Daily digest")
BTN_QUIET = N_("Quiet hours")
BTN_DIGEST_HOUR = N_("🕘 Digest hour: {time}")
BTN_ZONE = N_("🌐 Time zone: {zone}")
BTN_QUIET_OFF = N_("Turn quiet hours off")
BTN_DELIVERY = N_("🗞 Delivery")
BTN_BACK = N_("⬅️ Back")
CHECKED = "✓ "
PREVIOUS = "◀"
NEXT = "▶"
MINUS = "−"  # U+2212, as offsets are printed

# Pages of the zone screen: the named zones, then the offsets in two halves.
ZONE_PAGES = 3
_OFFSET_PAGES = (OFFSETS[:14], OFFSETS[14:])
HOURS_PER_ROW = 6
OFFSETS_PER_ROW = 4

# --- steps -----------------------------------------------------------------------------------

# Each operation and the range of each of its numbers (none, one or two).
_HOURS = range(24)
_STEPS: dict[str, tuple[range, ...]] = {
    "st": (),  # the main screen (/settings, or the panel's delivery screen)
    "mi": (),  # as they appear
    "md": (),  # daily digest (then its hour)
    "h": (),  # the digest hour grid
    "hs": (_HOURS,),  # set the digest hour
    "z": (range(ZONE_PAGES),),  # a page of zones
    "zn": (range(len(NAMED_ZONES)),),  # set a named zone (its index)
    "zo": (range(OFFSETS[0], OFFSETS[-1] + 1),),  # set a fixed offset
    "zd": (),  # the bot's TIMEZONE
    "q": (),  # the quiet hours screen (private chats)
    "qf": (_HOURS,),  # quiet from this hour: now choose until
    "qt": (_HOURS, _HOURS),  # quiet from a until b
    "qx": (),  # quiet hours off
}
QUIET_OPS = frozenset({"q", "qf", "qt", "qx"})
_PANEL_ARG = re.compile(r"([a-z]{1,2})(?:\.(-?\d{1,2}))?(?:\.(\d{1,2}))?")


@dataclass(frozen=True, slots=True)
class Step:
    """One press on a schedule screen: what it asks, with its numbers."""

    op: str
    a: int | None = None
    b: int | None = None

    @property
    def numbers(self) -> tuple[int, ...]:
        return tuple(n for n in (self.a, self.b) if n is not None)

    @property
    def update(self) -> ScheduleUpdate | None:
        """What the press changes (None: it only moves between screens)."""
        a, b = self.a, self.b
        match self.op:
            case "mi":
                return ScheduleUpdate(delivery=DeliveryMode.IMMEDIATE)
            case "md":
                return ScheduleUpdate(delivery=DeliveryMode.DIGEST)
            case "hs":
                return ScheduleUpdate(delivery=DeliveryMode.DIGEST, digest_hour=a)
            case "zn" if a is not None:
                return ScheduleUpdate(timezone=NAMED_ZONES[a])
            case "zo" if a is not None:
                return ScheduleUpdate(timezone=offset_name(a))
            case "zd":
                return ScheduleUpdate(timezone="")
            case "qt" if a is not None and b is not None:
                return ScheduleUpdate(quiet=(a, b))
            case "qx":
                return ScheduleUpdate(quiet=(0, 0))
        return None


def make_step(op: str, *numbers: str) -> Step | None:
    """The step `op` with its numbers (as text), None when they are not what it takes."""
    wanted = _STEPS.get(op)
    given = [n for n in numbers if n != ""]
    if wanted is None or len(given) != len(wanted):
        return None
    values = []
    for text, allowed in zip(given, wanted, strict=True):
        if not re.fullmatch(r"-?\d{1,2}", text) or int(text) not in allowed:
            return None
        values.append(int(text))
    if op == "qt" and values[0] == values[1]:
        return None  # quiet hours of no length
    return Step(op, *values)


def reader_data(step: Step) -> str:
    """The /settings button data of `step`."""
    return SCHEDULE.encode(step.op, *(str(n) for n in step.numbers))


def parse_reader_data(data: str | None) -> Step | None:
    """The step of a /settings schedule button, None when the data is not one the bot makes."""
    fields = SCHEDULE.decode(data)
    return None if fields is None else make_step(*fields)


def panel_arg(step: Step) -> str:
    """The panel's "sched" argument of `step`."""
    return ".".join([step.op, *(str(n) for n in step.numbers)])


def parse_panel_arg(arg: str) -> Step | None:
    """The step of a panel schedule button ("" is its main screen); no quiet hours there."""
    if arg == "":
        return Step("st")
    match = _PANEL_ARG.fullmatch(arg)
    if match is None or match.group(1) in QUIET_OPS:
        return None
    return make_step(match.group(1), match.group(2) or "", match.group(3) or "")


# --- labels ----------------------------------------------------------------------------------


def hour_label(hour: int) -> str:
    return f"{hour:02d}:00"


def zone_label(renderer: Renderer, lang: str, name: str | None) -> str:
    """A zone as readers know it: its city in their language (Баку), or its offset (UTC+4)."""
    key = name or getattr(renderer.zone, "key", None) or "UTC"
    if key == "UTC" or key.startswith(("UTC+", "UTC-")):
        return key.replace("-", MINUS)
    locale = renderer.translator.resolve(lang)
    try:
        city = get_timezone_location(key, locale=locale, return_city=True)
    except (LookupError, ValueError):
        city = None
    return str(city or key.rsplit("/", 1)[-1].replace("_", " "))


class ScheduleView:
    """The schedule screens of one chat, in `lang`, with buttons made by `data`."""

    def __init__(
        self, renderer: Renderer, lang: str, chat: Chat, data: Callable[[Step], str]
    ) -> None:
        self.renderer = renderer
        self.lang = lang
        self.chat = chat
        self.data = data
        self.settings = chat.settings

    @property
    def default_zone(self) -> tzinfo:
        return self.renderer.zone

    def _tr(self, msgid: str, **values: object) -> str:
        return self.renderer.translator.gettext(self.lang, msgid, **values)

    def _button(self, label: str, step: Step) -> InlineKeyboardButton:
        return InlineKeyboardButton(label, callback_data=self.data(step))

    def zone(self) -> str:
        """The chat's time zone as readers know it."""
        return zone_label(self.renderer, self.lang, self.settings.timezone)

    def lines(self) -> list[str]:
        """The chat's schedule, one HTML line each: delivery, and quiet hours (private)."""
        msg, settings = self.renderer.message, self.settings
        if settings.delivery is DeliveryMode.DIGEST:
            lines = [
                msg(self.lang, LINE_DIGEST, time=hour_label(settings.digest_hour),
                    zone=self.zone())
            ]  # fmt: skip
        else:
            lines = [msg(self.lang, LINE_IMMEDIATE)]
        if self.chat.type.is_private:
            quiet = settings.quiet_hours
            if quiet is None:
                lines.append(msg(self.lang, LINE_QUIET_OFF))
            else:
                lines.append(
                    msg(self.lang, LINE_QUIET, start=hour_label(quiet[0]),
                        end=hour_label(quiet[1]), zone=self.zone())
                )  # fmt: skip
        return lines

    def choice_rows(self) -> list[list[InlineKeyboardButton]]:
        """The delivery buttons: the two modes, and in digest mode its hour and zone."""
        rows = [
            [self._button(self._tr(BTN_IMMEDIATE), Step("mi")),
             self._button(self._tr(BTN_DIGEST), Step("md"))],
        ]  # fmt: skip
        if self.settings.delivery is DeliveryMode.DIGEST:
            hour = hour_label(self.settings.digest_hour)
            rows.append(
                [self._button(self._tr(BTN_DIGEST_HOUR, time=hour), Step("h")),
                 self._button(self._tr(BTN_ZONE, zone=self.zone()), Step("z", 0))]
            )  # fmt: skip
        return rows

    def quiet_row(self) -> list[InlineKeyboardButton]:
        return [self._button(self._tr(BTN_QUIET), Step("q"))]

    def _back(self) -> list[InlineKeyboardButton]:
        return [self._button(self._tr(BTN_BACK), Step("st"))]

    def _hour_grid(
        self, step: Callable[[int], Step | None], checked: int | None
    ) -> list[list[InlineKeyboardButton]]:
        buttons = []
        for hour in _HOURS:
            target = step(hour)
            if target is not None:
                mark = CHECKED if hour == checked else ""
                buttons.append(self._button(mark + hour_label(hour), target))
        return [buttons[i : i + HOURS_PER_ROW] for i in range(0, len(buttons), HOURS_PER_ROW)]

    def screen(self, step: Step) -> tuple[str, InlineKeyboardMarkup] | None:
        """The screen a step leads to, None for the main one (the caller's own)."""
        match step.op:
            case "md" | "h":
                return self.hours()
            case "z":
                return self.zones(step.a or 0)
            case "q" | "qt" | "qx" if self.chat.type.is_private:
                return self.quiet()
            case "qf" if self.chat.type.is_private and step.a is not None:
                return self.quiet_until(step.a)
        return None

    def hours(self) -> tuple[str, InlineKeyboardMarkup]:
        text = self.renderer.message(self.lang, HOURS_TITLE, zone=self.zone())
        current = self.settings.digest_hour
        rows = self._hour_grid(lambda h: Step("hs", h), current)
        rows.append([self._button(self._tr(BTN_ZONE, zone=self.zone()), Step("z", 0))])
        rows.append(self._back())
        return text, InlineKeyboardMarkup(rows)

    def zones(self, page: int) -> tuple[str, InlineKeyboardMarkup]:
        text = self.renderer.message(self.lang, ZONES_TITLE, zone=self.zone())
        current = self.settings.timezone
        rows: list[list[InlineKeyboardButton]] = []

        def label(name: str | None, shown: str) -> str:
            return (CHECKED if name == current else "") + shown

        if page == 0:
            default = zone_label(self.renderer, self.lang, None)
            rows.append([self._button(label(None, self._tr(DEFAULT_ZONE, zone=default)),
                                      Step("zd"))])  # fmt: skip
            named = [
                self._button(label(name, zone_label(self.renderer, self.lang, name)),
                             Step("zn", index))
                for index, name in enumerate(NAMED_ZONES)
            ]  # fmt: skip
            rows += [named[i : i + 2] for i in range(0, len(named), 2)]
        else:
            offsets = [
                self._button(label(offset_name(h), offset_name(h).replace("-", MINUS)),
                             Step("zo", h))
                for h in _OFFSET_PAGES[page - 1]
            ]  # fmt: skip
            rows += [
                offsets[i : i + OFFSETS_PER_ROW] for i in range(0, len(offsets), OFFSETS_PER_ROW)
            ]
        paging = []
        if page > 0:
            paging.append(self._button(PREVIOUS, Step("z", page - 1)))
        if page < ZONE_PAGES - 1:
            paging.append(self._button(NEXT, Step("z", page + 1)))
        rows.append(paging)
        rows.append(self._back())
        return text, InlineKeyboardMarkup(rows)

    def quiet(self) -> tuple[str, InlineKeyboardMarkup]:
        msg = self.renderer.message
        quiet = self.settings.quiet_hours
        now = (
            msg(self.lang, LINE_QUIET_OFF)
            if quiet is None
            else msg(self.lang, LINE_QUIET, start=hour_label(quiet[0]), end=hour_label(quiet[1]),
                     zone=self.zone())
        )  # fmt: skip
        text = "\n\n".join(
            [msg(self.lang, QUIET_TITLE), now, msg(self.lang, QUIET_FROM, zone=self.zone())]
        )
        rows = self._hour_grid(lambda h: Step("qf", h), quiet[0] if quiet else None)
        if quiet is not None:
            rows.append([self._button(self._tr(BTN_QUIET_OFF), Step("qx"))])
        rows.append([self._button(self._tr(BTN_ZONE, zone=self.zone()), Step("z", 0))])
        rows.append(self._back())
        return text, InlineKeyboardMarkup(rows)

    def quiet_until(self, start: int) -> tuple[str, InlineKeyboardMarkup]:
        text = self.renderer.message(self.lang, QUIET_UNTIL, start=hour_label(start))
        quiet = self.settings.quiet_hours
        checked = quiet[1] if quiet is not None and quiet[0] == start else None
        rows = self._hour_grid(lambda h: make_step("qt", str(start), str(h)), checked)
        rows.append([self._button(self._tr(BTN_BACK), Step("q"))])
        return text, InlineKeyboardMarkup(rows)

    def delivery(self, back: InlineKeyboardButton) -> tuple[str, InlineKeyboardMarkup]:
        """The panel's delivery screen: the choice, and in digest mode its hour and zone."""
        msg = self.renderer.message
        title = msg(self.lang, DELIVERY_TITLE, chat=Markup(bold(self.chat.display_name)))
        text = "\n\n".join([title, msg(self.lang, DELIVERY_HELP), "\n".join(self.lines())])
        return text, InlineKeyboardMarkup([*self.choice_rows(), [back]])
