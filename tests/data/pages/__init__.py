"""Article pages for the summary tests: the real Caliber.az page of shared/corpus wrapped in the
site's chrome, and Russian and Azerbaijani pages written for these tests.

`corpus_article()` splits the scraped page into its parts: everything before the headline and
after the last body paragraph is chrome, and `chrome_lines` lists it so tests can check that
none of it reaches a post.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

PAGES = Path(__file__).resolve().parent
# The shared corpus beside the checkout; a copy of the same file keeps the tests working where
# that folder is absent.
_SHARED = Path(__file__).resolve().parents[4] / "shared" / "corpus" / "caliber-article.txt"
CORPUS = _SHARED if _SHARED.exists() else PAGES / "caliber-article.txt"


@dataclass(frozen=True, slots=True)
class CorpusArticle:
    title: str
    date: str
    paragraphs: tuple[str, ...]
    chrome_lines: tuple[str, ...]


def corpus_article() -> CorpusArticle:
    """The corpus page split into headline, date, body paragraphs and chrome."""
    lines = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    # The headline follows the font-size buttons; the body ends before the signature.
    start = lines.index("A-") + 1
    end = lines.index("Caliber.Az")
    title, date, *body = lines[start:end]
    return CorpusArticle(
        title=title,
        date=date,
        paragraphs=tuple(body),
        chrome_lines=tuple(lines[:start] + lines[end:]),
    )


def caliber_page(url: str, *, image: str = "/media/2025/07/drills.jpg") -> str:
    """The corpus article as the site would serve it, header, menus, share bar and footer."""
    article = corpus_article()
    template = (PAGES / "caliber-en.template.html").read_text(encoding="utf-8")
    body = "\n".join(f"        <p>{html.escape(p, quote=False)}</p>" for p in article.paragraphs)
    values = {
        "{title}": html.escape(article.title),
        "{date}": html.escape(article.date),
        "{description}": html.escape(article.paragraphs[0][:160]),
        "{image}": html.escape(image),
        "{url}": html.escape(url),
        "{body}": body,
    }
    for key, value in values.items():
        template = template.replace(key, value)
    return template


def page(name: str) -> str:
    """One of the hand-written pages: "caliber-ru.html" or "caliber-az.html"."""
    return (PAGES / name).read_text(encoding="utf-8")


# What the hand-written pages carry around their articles (must never reach a post).
RU_CHROME = (
    "twitter", "youtube", "telegram", "ЧТО ВЫ ИЩЕТЕ", "поиск", "ПОЛИТИКА", "ЭКОНОМИКА",
    "АНАЛИТИКА", "Любое использование материалов", "A+", "A-", "Caliber.Az", "Просмотров",
    "Поделитесь", "печать", "копировать ссылку", "Ссылка скопирована", "реклама",
    "Подписывайтесь", "Все права защищены", "©",
)  # fmt: skip
AZ_CHROME = (
    "twitter", "facebook", "instagram", "NƏ AXTARIRSINIZ", "axtar", "SİYASƏT", "İQTİSADİYYAT",
    "ANALİTİKA", "Caliber.Az", "Baxış sayı", "paylaşın", "çap et", "linki kopyala",
    "Keçid kopyalandı", "reklam", "izləyin", "Materiallardan istifadə", "Bütün hüquqlar", "©",
)  # fmt: skip
