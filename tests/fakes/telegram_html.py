"""Validator for Telegram's ``parse_mode=HTML``, usable by fakes and property tests.

The parser is a port of ``parse_html`` from tdlib (``td/telegram/MessageEntity.cpp``),
which is what the Bot API server runs: it works on UTF-8 bytes, reports byte offsets
and produces the same error messages. Real Telegram is more lenient than its own
documentation (a bare ``&`` or ``>`` passes through, ``&lt`` needs no ``;``, unquoted
attribute values are accepted), so by default ``strict=True`` additionally enforces
the documented rules. A bot that passes strict checking is safe on the real server;
``strict=False`` mirrors tdlib exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SUPPORTED_TAGS",
    "HtmlEntity",
    "ParsedHtml",
    "TelegramHtmlError",
    "check_html",
    "parse_html",
    "utf16_len",
]

#: Tags accepted by the Bot API in HTML mode (``tg-time`` from newer tdlib is left out:
#: the Bot API documentation does not list it).
SUPPORTED_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)

_SIMPLE_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
}

_NAMED_ENTITIES = {b"lt": ord("<"), b"gt": ord(">"), b"amp": ord("&"), b"quot": ord('"')}

# tdlib's is_space() counts NUL as a space; NUL also serves as the end-of-text sentinel
# (C strings), which is why at() below returns 0 past the end.
_SPACE = frozenset(b" \t\r\n\v\f\0")
_LT, _GT, _AMP, _SLASH, _EQ = b"<>&/="
_QUOTES = frozenset(b"\"'")
_ATTR_NAME_STOP = frozenset(b"=>/\"'")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_LINK_SCHEMES = frozenset({"http", "https", "tg", "ton", "tonsite", "ftp"})
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")

_PARSE_PREFIX = "Bad Request: can't parse entities: "


class TelegramHtmlError(ValueError):
    """Text Telegram would refuse; ``description`` is the Bot API error description.

    ``message`` is the bare tdlib message (``Unsupported start tag "div" at byte
    offset 12``); ``description`` adds the Bot API prefix and is what the fake server
    answers with.
    """

    def __init__(self, message: str, *, description: str | None = None) -> None:
        self.message = message
        self.description = description or _PARSE_PREFIX + message
        super().__init__(self.description)


@dataclass(frozen=True, slots=True)
class HtmlEntity:
    """A Bot API ``MessageEntity``; offsets and lengths are in UTF-16 code units."""

    type: str
    offset: int
    length: int
    url: str | None = None
    language: str | None = None
    custom_emoji_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Bot API JSON shape (optional fields only when set)."""
        data: dict[str, Any] = {"type": self.type, "offset": self.offset, "length": self.length}
        for key in ("url", "language", "custom_emoji_id"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data


@dataclass(frozen=True, slots=True)
class ParsedHtml:
    """Plain text after entity parsing, plus the entities found in it."""

    text: str
    entities: tuple[HtmlEntity, ...]


@dataclass(slots=True)
class _OpenTag:
    name: str
    argument: str
    utf16_offset: int
    out_pos: int  # byte position in the output, for <a> without href


def utf16_len(s: str) -> int:
    """Length in UTF-16 code units, the unit of all Telegram limits and offsets."""
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def check_html(text: str, *, strict: bool = True) -> str:
    """Validate ``text`` as Telegram HTML and return the plain text it renders to.

    Raises :class:`TelegramHtmlError` where Telegram would answer
    ``400 Bad Request: can't parse entities: ...`` (see module docstring for
    ``strict``).
    """
    return parse_html(text, strict=strict).text


def parse_html(text: str, *, strict: bool = True) -> ParsedHtml:
    """Parse ``text`` like the Bot API does; return plain text and entities."""
    if "\0" in text:
        raise TelegramHtmlError("Text must not contain null bytes")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate can't be sent as UTF-8; the Bot API rejects the request.
        raise TelegramHtmlError(
            "strings must be encoded in UTF-8",
            description="Bad Request: strings must be encoded in UTF-8",
        ) from None
    return _Parser(data, strict=strict).run()


def _is_space(c: int) -> bool:
    return c in _SPACE


def _is_alnum(c: int) -> bool:
    return 0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


def _is_alpha(c: int) -> bool:
    return 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


def _checked_link(url: str) -> str | None:
    """Approximation of tdlib's LinkManager::get_checked_link.

    Telegram silently drops a text link it doesn't accept instead of failing.
    """
    url = url.strip()
    if not url or any(ch.isspace() for ch in url):
        return None
    match = _SCHEME_RE.match(url)
    if match is None:
        return "http://" + url
    return url if match.group(1).lower() in _LINK_SCHEMES else None


class _Parser:
    """One parse of one text; mirrors tdlib's single loop over UTF-8 bytes."""

    def __init__(self, data: bytes, *, strict: bool) -> None:
        self.b = data
        self.n = len(data)
        self.strict = strict
        self.out = bytearray()
        self.utf16 = 0
        self.stack: list[_OpenTag] = []
        self.entities: list[HtmlEntity] = []
        self.code_languages: dict[int, str] = {}  # id(code entity) -> language, until </pre>
        self.need_recheck_utf8 = False

    def at(self, i: int) -> int:
        return self.b[i] if i < self.n else 0

    # -- entities such as &amp; ------------------------------------------------------

    def decode_entity(self, pos: int) -> tuple[int, int, bool] | None:
        """Return (code point, position after it, had ';') or None if not an entity."""
        end = pos + 1
        code = 0
        if self.at(pos + 1) == ord("#"):
            end += 1
            if self.at(pos + 2) == ord("x"):  # tdlib accepts only a lower-case 'x'
                end += 1
                while self.at(end) in _HEX:
                    code = code * 16 + int(chr(self.at(end)), 16)
                    end += 1
            else:
                while 0x30 <= self.at(end) <= 0x39:
                    code = code * 10 + self.at(end) - 0x30
                    end += 1
            if code == 0 or code >= 0x10FFFF or end - pos >= 10:
                return None
        else:
            while _is_alpha(self.at(end)):
                end += 1
            named = _NAMED_ENTITIES.get(self.b[pos + 1 : end])
            if named is None:
                return None
            code = named
        if self.at(end) == ord(";"):
            return code, end + 1, True
        return code, end, False

    def reserved(self, char: str, pos: int, escape: str) -> TelegramHtmlError:
        return TelegramHtmlError(
            f"Character '{char}' is reserved and must be escaped as \"{escape}\" "
            f"at byte offset {pos}"
        )

    def take_entity(self, pos: int) -> tuple[int, int] | None:
        """Decode an entity at ``pos``, applying strict-mode rules for bare ``&``."""
        decoded = self.decode_entity(pos)
        if decoded is None or (self.strict and not decoded[2]):
            if self.strict:
                raise self.reserved("&", pos, "&amp;")
            return None
        code, end, _ = decoded
        return code, end

    # -- main loop ---------------------------------------------------------------------

    def run(self) -> ParsedHtml:
        i = 0
        while i < self.n:
            c = self.b[i]
            if c == _AMP:
                taken = self.take_entity(i)
                if taken is not None:
                    code, i = taken
                    self.utf16 += 2 if code > 0xFFFF else 1
                    if 0xD800 <= code <= 0xDFFF:
                        self.need_recheck_utf8 = True
                    self.out += chr(code).encode("utf-8", "surrogatepass")
                    continue
            elif c == _GT and self.strict:
                raise self.reserved(">", i, "&gt;")
            if c != _LT:
                if c & 0xC0 != 0x80:  # first byte of a UTF-8 sequence
                    self.utf16 += 2 if c >= 0xF0 else 1
                self.out.append(c)
                i += 1
                continue
            i = self.end_tag(i) if self.at(i + 1) == _SLASH else self.start_tag(i)
        if self.stack:
            raise TelegramHtmlError(
                f"Can't find end tag corresponding to start tag {self.stack[-1].name}"
            )
        return ParsedHtml(self.result_text(), self.sorted_entities())

    def start_tag(self, begin: int) -> int:
        i = begin + 1
        while not _is_space(self.at(i)) and self.at(i) != _GT:
            i += 1
        if self.at(i) == 0:
            raise TelegramHtmlError(f"Unclosed start tag at byte offset {begin}")
        tag = self.b[begin + 1 : i].lower().decode("utf-8", "replace")
        if tag not in SUPPORTED_TAGS:
            raise TelegramHtmlError(f'Unsupported start tag "{tag}" at byte offset {begin}')

        argument = ""
        has_href = False
        while self.at(i) != _GT:
            while self.at(i) != 0 and _is_space(self.at(i)):
                i += 1
            if self.at(i) == _GT:
                break
            name_begin = i
            while not _is_space(self.at(i)) and self.at(i) not in _ATTR_NAME_STOP:
                i += 1
            name = self.b[name_begin:i].decode("utf-8", "replace")
            if not name:
                raise TelegramHtmlError(
                    f'Empty attribute name in the tag "{tag}" at byte offset {begin}'
                )
            while self.at(i) != 0 and _is_space(self.at(i)):
                i += 1
            if self.at(i) != _EQ:
                if self.at(i) == 0:
                    raise TelegramHtmlError(f'Unclosed start tag "{tag}" at byte offset {begin}')
                if tag == "blockquote" and name == "expandable":
                    argument = "1"
                elif self.strict:
                    # Current tdlib ignores such attributes; older ones (and the docs)
                    # require name="value".
                    raise TelegramHtmlError(
                        "Expected equal sign in declaration of an attribute of the tag "
                        f'"{tag}" at byte offset {begin}'
                    )
                continue
            i += 1
            while self.at(i) != 0 and _is_space(self.at(i)):
                i += 1
            if self.at(i) == 0:
                raise TelegramHtmlError(f'Unclosed start tag "{tag}" at byte offset {begin}')
            value, i = self.attribute_value(i, tag, name)
            if self.at(i) == 0:
                raise TelegramHtmlError(f"Unclosed start tag at byte offset {begin}")

            # Attribute names are compared case-sensitively, as in tdlib.
            if tag == "a" and name == "href":
                argument, has_href = value, True
            elif tag == "code" and name == "class" and value.startswith("language-"):
                argument = value[9:]
            elif tag == "span" and name == "class" and value.startswith("tg-"):
                argument = value[3:]
            elif tag == "tg-emoji" and name == "emoji-id":
                argument = value
            elif tag == "blockquote" and name == "expandable":
                argument = "1"

        if tag == "span" and argument != "spoiler":
            raise TelegramHtmlError(
                f'Tag "span" must have class "tg-spoiler" at byte offset {begin}'
            )
        if self.strict and tag == "a" and not has_href:
            # tdlib would use the link text as the URL; the docs require href.
            raise TelegramHtmlError(f'Tag "a" must have an "href" attribute at byte offset {begin}')
        self.stack.append(_OpenTag(tag, argument, self.utf16, len(self.out)))
        return i + 1

    def attribute_value(self, i: int, tag: str, name: str) -> tuple[str, int]:
        if self.at(i) not in _QUOTES:
            if self.strict:
                raise TelegramHtmlError(
                    f'Value of the attribute "{name}" of the tag "{tag}" must be quoted '
                    f"at byte offset {i}"
                )
            # An SGML name token: letters, digits, periods, hyphens; case-insensitive.
            token_begin = i
            while _is_alnum(self.at(i)) or self.at(i) in b".-":
                i += 1
            if not _is_space(self.at(i)) and self.at(i) != _GT:
                raise TelegramHtmlError(
                    f"Unexpected end of name token at byte offset {token_begin}"
                )
            return self.b[token_begin:i].lower().decode("ascii"), i

        quote = self.at(i)
        i += 1
        value = bytearray()
        while self.at(i) != quote and self.at(i) != 0:
            if self.at(i) == _AMP:
                taken = self.take_entity(i)
                if taken is not None:
                    code, i = taken
                    value += chr(code).encode("utf-8", "surrogatepass")
                    continue
            value.append(self.at(i))
            i += 1
        if self.at(i) == quote:
            i += 1
        return value.decode("utf-8", "replace"), i

    def end_tag(self, begin: int) -> int:
        if not self.stack:
            raise TelegramHtmlError(f"Unexpected end tag at byte offset {begin}")
        i = begin + 2
        while not _is_space(self.at(i)) and self.at(i) != _GT:
            i += 1
        end_name = self.b[begin + 2 : i].lower().decode("utf-8", "replace")
        while _is_space(self.at(i)) and self.at(i) != 0:
            i += 1
        if self.at(i) != _GT:
            raise TelegramHtmlError(f"Unclosed end tag at byte offset {begin}")
        open_tag = self.stack[-1]
        # "</>" closes whatever is open, as tdlib allows.
        if end_name and end_name != open_tag.name:
            raise TelegramHtmlError(
                f"Unmatched end tag at byte offset {begin}, "
                f'expected "</{open_tag.name}>", found "</{end_name}>"'
            )
        if self.utf16 > open_tag.utf16_offset:  # empty entities are dropped
            self.close_entity(open_tag)
        self.stack.pop()
        return i + 1

    def close_entity(self, tag: _OpenTag) -> None:
        offset = tag.utf16_offset
        length = self.utf16 - offset
        last = self.entities[-1] if self.entities else None
        same_range = last is not None and last.offset == offset and last.length == length

        if tag.name in _SIMPLE_ENTITY_TYPES:
            self.entities.append(HtmlEntity(_SIMPLE_ENTITY_TYPES[tag.name], offset, length))
        elif tag.name == "tg-emoji":
            if not _is_valid_custom_emoji_id(tag.argument):
                raise TelegramHtmlError("Invalid custom emoji identifier specified")
            self.entities.append(
                HtmlEntity("custom_emoji", offset, length, custom_emoji_id=tag.argument)
            )
        elif tag.name == "a":
            url = tag.argument or self.out[tag.out_pos :].decode("utf-8", "replace")
            checked = _checked_link(url)
            if checked is not None:
                self.entities.append(HtmlEntity("text_link", offset, length, url=checked))
        elif tag.name == "pre":
            # <code class="language-x"><pre>..</pre></code>: merge into one pre entity.
            if same_range and last is not None and last.type == "code":
                language = self.code_languages.get(id(last), "")
                if language:
                    self.entities[-1] = HtmlEntity("pre", offset, length, language=language)
                    return
            self.entities.append(HtmlEntity("pre", offset, length))
        elif tag.name == "code":
            # <pre><code class="language-x">..</code></pre>: the language goes to pre.
            if same_range and last is not None and last.type == "pre" and tag.argument:
                self.entities[-1] = HtmlEntity("pre", offset, length, language=tag.argument)
                return
            entity = HtmlEntity("code", offset, length)
            self.entities.append(entity)
            if tag.argument:
                self.code_languages[id(entity)] = tag.argument
        elif tag.name == "blockquote":
            kind = "expandable_blockquote" if tag.argument else "blockquote"
            self.entities.append(HtmlEntity(kind, offset, length))

    def result_text(self) -> str:
        text = self.out.decode("utf-8", "surrogatepass")
        if self.need_recheck_utf8:
            try:
                # Pairs of surrogates given as two entities combine into one character;
                # a lone half is an error.
                text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
            except UnicodeDecodeError:
                raise TelegramHtmlError(
                    "Text contains invalid Unicode characters after decoding HTML entities, "
                    "check for unmatched surrogate code units"
                ) from None
        return text

    def sorted_entities(self) -> tuple[HtmlEntity, ...]:
        # Outer entities first for equal offsets, like tdlib's sort_entities().
        return tuple(sorted(self.entities, key=lambda e: (e.offset, -e.length)))


def _is_valid_custom_emoji_id(value: str) -> bool:
    try:
        number = int(value)
    except ValueError:
        return False
    return number != 0 and -(2**63) <= number < 2**63 and value.strip() == value
