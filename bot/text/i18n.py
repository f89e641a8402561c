"""Translations: gettext catalogs (.po sources compiled in memory at start) and localised dates.

Message ids are the English text; every language, English included, has a catalog under
bot/locales/<lang>/LC_MESSAGES/*.po, and all .po files of a language are merged, so each feature
can keep its own file. Adding a language is a catalog directory plus one line in LANGUAGES.
"""

from __future__ import annotations

import gettext
import io
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_datetime
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

log = logging.getLogger(__name__)

# The languages the bot speaks, with the name shown on the language buttons (in that language).
LANGUAGES: Mapping[str, str] = {
    "en": "English",
    "ru": "Русский",
    "az": "Azərbaycanca",
}

LOCALES_DIR = Path(__file__).parents[1] / "locales"


def N_(message: str) -> str:
    """Mark a message id for translation where it is defined; translate it where it is shown."""
    return message


def load_catalog(lang: str, locales_dir: Path = LOCALES_DIR) -> Catalog:
    """Read and merge every .po file of `lang` into one babel Catalog."""
    merged = Catalog(locale=Locale.parse(lang), domain="bot")
    directory = locales_dir / lang / "LC_MESSAGES"
    for po_path in sorted(directory.glob("*.po")):
        with po_path.open("rb") as handle:
            catalog = read_po(handle, locale=lang)
        for message in catalog:
            if message.id:
                merged[message.id] = message
    return merged


class Translator:
    """Translate message ids into the chat's language; unknown languages fall back to English."""

    def __init__(self, locales_dir: Path = LOCALES_DIR, default_language: str = "en") -> None:
        self.default_language = default_language
        self._translations: dict[str, gettext.GNUTranslations] = {}
        for lang in LANGUAGES:
            buffer = io.BytesIO()
            write_mo(buffer, load_catalog(lang, locales_dir))
            buffer.seek(0)
            self._translations[lang] = gettext.GNUTranslations(buffer)

    def resolve(self, lang: str | None) -> str:
        """Return `lang` if the bot speaks it (accepting codes like 'ru-RU'), else the default."""
        if lang:
            code = lang.lower().replace("_", "-").split("-")[0]
            if code in self._translations:
                return code
        return self.default_language

    def gettext(self, lang: str | None, message: str, /, **values: Any) -> str:
        """Translate `message` into `lang` and fill its {placeholders} from `values`."""
        text = self._translations[self.resolve(lang)].gettext(message)
        return text.format(**values) if values else text

    def ngettext(
        self, lang: str | None, singular: str, plural: str, n: int, /, **values: Any
    ) -> str:
        """Translate with the language's plural rules; `{n}` is always available."""
        text = self._translations[self.resolve(lang)].ngettext(singular, plural, n)
        return text.format(n=n, **values)

    def format_date(self, lang: str | None, moment: datetime) -> str:
        """Format a timestamp the way readers of `lang` write it (e.g. 26 ноября 2026, 14:05)."""
        return format_datetime(moment, "d MMMM y, HH:mm", locale=self.resolve(lang))
