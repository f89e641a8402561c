"""The one place that produces Telegram HTML.

Everything that came from a feed or a user is escaped here; plain text is measured and cut
before it is wrapped in tags, so a post always parses and fits Telegram's limits as Telegram
counts them (UTF-16 code units of the text after entity parsing).
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from babel.dates import format_date
from telegram.constants import MessageLimit

from bot.text.i18n import N_, Translator
from bot.text.plain import normalise_whitespace, one_line, truncate, utf16_len
from bot.text.summary import lead
from storage.models import ChatSettings, Item, PostStyle

TEXT_LIMIT = int(MessageLimit.MAX_TEXT_LENGTH)  # 4096
CAPTION_LIMIT = int(MessageLimit.CAPTION_LENGTH)  # 1024
TITLE_LIMIT = 300
MAX_HASHTAGS = 5
READ_MORE = N_("Read more")
UNTITLED = N_("Untitled")
# Digests: pieces without a category go under this heading, last.
OTHER_CATEGORY = N_("Other")
# Telegram applies only the first 100 entities of a message (bold, links…, and what it finds
# itself: #hashtags, @mentions, addresses in the text) and refuses one whose entities are too
# long all together; a digest message stays well inside both.
DIGEST_ENTITIES = 80
LINK_BUDGET = 6000  # characters of link addresses in one message
DIGEST_TITLE_LIMIT = 200
CATEGORY_LIMIT = 100

_HASHTAG_JUNK = re.compile(r"[^\w]+", re.UNICODE)


def escape(text: str) -> str:
    """Escape text for a Telegram HTML text node."""
    return html.escape(text, quote=False)


def escape_attr(text: str) -> str:
    """Escape text for a quoted Telegram HTML attribute (href)."""
    return html.escape(text, quote=True)


def link(url: str, label: str) -> str:
    """Return an <a> tag around escaped `label`."""
    return f'<a href="{escape_attr(url)}">{escape(label)}</a>'


def bold(text: str) -> str:
    return f"<b>{escape(text)}</b>"


def italic(text: str) -> str:
    return f"<i>{escape(text)}</i>"


def hashtag(category: str, lang: str = "") -> str | None:
    """Turn a category into a hashtag: letters, digits and underscores, words joined CamelCase
    with the language's capitals (#Analytics, #Аналитика, #İqtisadiyyat); SHOUTED words of
    five letters or more are written as words (ANALYTICS → #Analytics)."""
    words = [w for w in _HASHTAG_JUNK.split(unicodedata.normalize("NFC", category)) if w]
    words = [w.replace("_", "") or w for w in words]
    if not words:
        return None
    joined = "".join(_capitalised(w, lang) for w in words)[:60]
    # Telegram does not link a hashtag made only of digits.
    if not any(ch.isalpha() for ch in joined):
        return None
    return "#" + joined


def _capitalised(word: str, lang: str) -> str:
    turkic = lang in ("az", "tr")
    if len(word) >= 5 and word.isupper():
        rest = word[1:]
        if turkic:
            rest = rest.replace("I", "ı").replace("İ", "i")
        word = word[0] + rest.replace("İ", "i").lower()
    first = word[:1]
    if turkic and first == "i":
        first = "İ"
    return first.upper() + word[1:]


def hashtags(
    categories: tuple[str, ...], limit: int = MAX_HASHTAGS, *, lang: str = ""
) -> list[str]:
    tags: list[str] = []
    seen: set[str] = set()
    for category in categories:
        tag = hashtag(category, lang)
        if tag and tag.casefold() not in seen:
            seen.add(tag.casefold())
            tags.append(tag)
        if len(tags) >= limit:
            break
    return tags


@dataclass(frozen=True, slots=True)
class Post:
    """A rendered post and how to send it."""

    html: str
    text: str  # the same post as Telegram will show it, without markup
    link: str
    photo_url: str | None  # send as a photo with `html` as its caption
    disable_preview: bool

    @property
    def is_photo(self) -> bool:
        return self.photo_url is not None


class Renderer:
    """Build posts and messages in a chat's language."""

    def __init__(self, translator: Translator, timezone: str, summary_length: int) -> None:
        self.translator = translator
        self.zone = ZoneInfo(timezone)
        self.summary_length = summary_length

    @staticmethod
    def post_style(settings: ChatSettings) -> tuple[object, ...]:
        """What of a chat's settings its posts depend on: chats alike in these get the same
        post of a piece (a fan-out renders once per language and style, not per chat)."""
        return (settings.style, settings.hashtags, settings.signature)

    def post(
        self,
        item: Item,
        settings: ChatSettings | None = None,
        *,
        lang: str | None = None,
        allow_photo: bool = True,
    ) -> Post:
        """Render `item` for a chat with `settings`; the post's fixed words are in `lang`."""
        settings = settings or ChatSettings()
        lang = lang or item.lang
        photo = (
            item.image_url
            if allow_photo and settings.style is PostStyle.PHOTO and item.image_url
            else None
        )
        limit = CAPTION_LIMIT if photo else TEXT_LIMIT
        tr = self.translator

        title = self.title(item, lang)
        meta = self.date(item, lang)
        if item.author:
            meta += " · " + truncate(one_line(item.author), 100)
        read_more = tr.gettext(lang, READ_MORE)
        tags = " ".join(hashtags(item.categories, lang=item.lang)) if settings.hashtags else ""
        signature = truncate(one_line(settings.signature), 200) if settings.signature else ""

        # Fixed parts as (plain, html); the summary gets whatever room is left.
        head = [(title, f"<b>{link(item.link, title)}</b>"), (meta, italic(meta))]
        tail = [(read_more, link(item.link, read_more))]
        if tags:
            tail.append((tags, escape(tags)))
        if signature:
            tail.append((signature, escape(signature)))
        fixed = "\n".join(p for p, _ in head) + "\n\n" + "\n".join(p for p, _ in tail)
        room = limit - utf16_len(fixed) - 2  # the blank line around the summary
        summary = normalise_whitespace(item.summary)
        if summary and _repeats_title(summary, title):
            summary = ""
        # Whole sentences that fit (see bot.text.summary.lead); idempotent on a stored summary.
        room = min(room, self.summary_length) if room > 20 else 0
        summary = lead(summary, room, title=title, author=item.author, lang=item.lang)

        plain_parts = ["\n".join(p for p, _ in head)]
        html_parts = ["\n".join(h for _, h in head)]
        if summary:
            plain_parts.append(summary)
            html_parts.append(escape(summary))
        plain_parts.append("\n".join(p for p, _ in tail))
        html_parts.append("\n".join(h for _, h in tail))
        return Post(
            html="\n\n".join(html_parts),
            text="\n\n".join(plain_parts),
            link=item.link,
            photo_url=photo,
            disable_preview=settings.style is PostStyle.TEXT,
        )

    def title(self, item: Item, lang: str, limit: int = TITLE_LIMIT) -> str:
        """The piece's title as plain text; the summary's start or the host when it has none."""
        return (
            truncate(one_line(item.title), limit)
            or truncate(one_line(item.summary), 80)
            or urlsplit(item.link).netloc
            or self.translator.gettext(lang, UNTITLED)
        )

    def date(self, item: Item, lang: str) -> str:
        """When the piece was published (else first seen), in `lang`, in the bot's time zone."""
        moment = datetime.fromtimestamp(item.published_at or item.first_seen_at, UTC)
        return self.translator.format_date(lang, moment.astimezone(self.zone))

    def day(self, lang: str | None, moment: datetime) -> str:
        """A day the way readers of `lang` write it (e.g. 26 ноября), in `moment`'s zone."""
        return format_date(moment, "d MMMM", locale=self.translator.resolve(lang))

    def digest(self, items: Sequence[Item], lang: str, heading: str) -> list[str]:
        """A digest of `items` as messages of Telegram HTML, in order: `heading` (plain text,
        bold) and the pieces' linked titles grouped under their first category, as the feed
        names it (those without one last, under "Other"). Each message fits Telegram: at most
        4,096 characters of text as Telegram counts them, DIGEST_ENTITIES entities and
        LINK_BUDGET characters of links; a category cut by a message's end is named again at
        the next one's start, and every message after the first says which part it is."""
        groups: dict[str, tuple[str, list[Item]]] = {}
        for item in items:
            name = truncate(one_line(item.categories[0]), CATEGORY_LIMIT) if item.categories else ""
            groups.setdefault(name.casefold(), (name, []))[1].append(item)
        other = groups.pop("", None)
        if other is not None:
            groups[""] = (self.translator.gettext(lang, OTHER_CATEGORY), other[1])
        heading = truncate(one_line(heading), DIGEST_TITLE_LIMIT)
        # Room for the heading and its part number (" (12/12)") in every message.
        room = TEXT_LIMIT - utf16_len(heading) - len(" (99/99)") - 2
        parts: list[_DigestPart] = []
        part = _DigestPart()
        for name, members in groups.values():
            category = (name, bold(name))
            for item in members:
                title = self.title(item, lang)
                line = ("• " + title, "• " + link(item.link, title))
                if not part.fits(category, line, len(item.link), room):
                    parts.append(part)
                    part = _DigestPart()
                part.add(category, line, len(item.link))
        parts.append(part)
        messages = []
        for number, done in enumerate(parts, start=1):
            head = heading if len(parts) == 1 else f"{heading} ({number}/{len(parts)})"
            messages.append(bold(head) + "\n\n" + "\n".join(done.html))
        return messages

    def listing(self, number: int, item: Item, lang: str, title_limit: int = TITLE_LIMIT) -> str:
        """One numbered entry of a list of pieces: bold number, linked title, date in italics."""
        title = self.title(item, lang, title_limit)
        return f"{bold(f'{number}.')} {link(item.link, title)}\n{italic(self.date(item, lang))}"

    def message(self, lang: str | None, msgid: str, /, **values: object) -> str:
        """Translate `msgid` and fill it with escaped values: HTML ready to send.

        Values wrapped in `Markup` are inserted as they are (already-built HTML).
        """
        template = escape(self.translator.gettext(lang, msgid))
        return template.format(**{k: _html_value(v) for k, v in values.items()})

    def plural(
        self, lang: str | None, singular: str, plural: str, n: int, /, **values: object
    ) -> str:
        """Like `message`, with the language's plural rules; `{n}` is the count."""
        text = self.translator.ngettext(
            lang, singular, plural, n, **{k: "\x00" + k + "\x00" for k in values}
        )
        rendered = escape(text)
        for key, value in values.items():
            rendered = rendered.replace("\x00" + key + "\x00", _html_value(value))
        return rendered


class _DigestPart:
    """One message of a digest being filled: its lines as text and as HTML, and its costs."""

    def __init__(self) -> None:
        self.html: list[str] = []
        self.length = 0  # UTF-16 units of its text after the heading
        self.entities = 1  # the bold heading
        self.links = 0  # characters of link addresses
        self.category: str | None = None

    def _lines(self, category: tuple[str, str], line: tuple[str, str]) -> list[tuple[str, str]]:
        if self.category == category[0]:
            return [line]
        blank = [("", "")] if self.html else []
        return [*blank, category, line]

    def fits(
        self, category: tuple[str, str], line: tuple[str, str], link_chars: int, room: int
    ) -> bool:
        """Whether `line` (under `category`) still fits; a first line always does."""
        if not self.html:
            return True
        lines = self._lines(category, line)
        length = sum(utf16_len(plain) + 1 for plain, _ in lines)
        return (
            self.length + length <= room
            and self.entities + len(lines) - lines.count(("", "")) <= DIGEST_ENTITIES
            and self.links + link_chars <= LINK_BUDGET
        )

    def add(self, category: tuple[str, str], line: tuple[str, str], link_chars: int) -> None:
        for plain, markup in self._lines(category, line):
            self.html.append(markup)
            self.length += utf16_len(plain) + 1
            self.entities += 1 if plain else 0
        self.links += link_chars
        self.category = category[0]


class Markup(str):
    """A string that is already Telegram HTML and must not be escaped again."""

    __slots__ = ()


def _html_value(value: object) -> str:
    if isinstance(value, Markup):
        return str(value)
    return escape(str(value))


def _repeats_title(summary: str, title: str) -> bool:
    """True when the summary says nothing beyond the title (feeds often repeat it)."""

    def fold(s: str) -> str:
        return " ".join(_HASHTAG_JUNK.sub(" ", s.casefold()).split())

    return bool(title) and fold(summary) == fold(title)
