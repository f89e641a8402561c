"""Summaries: sentence splitting in en/ru/az, cleaning, the lead and extractive summarisers,
extraction of article pages, and hashtags per language."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.pipeline.extract import extract_article
from bot.text.plain import ELLIPSIS, utf16_len
from bot.text.render import hashtag, hashtags
from bot.text.summary import (
    centrality,
    clean_text,
    extractive,
    is_chrome,
    lead,
    split_sentences,
    summarise,
)
from tests.data.pages import AZ_CHROME, RU_CHROME, caliber_page, corpus_article, page

# ------------------------------------------------------------------ sentence splitting


@pytest.mark.parametrize(
    ("lang", "text", "expected"),
    [
        (
            "en",
            "Mr. J. K. Smith arrived at 3 p.m. on Monday. He met the U.S. envoy, e.g. in Baku.",
            ["Mr. J. K. Smith arrived at 3 p.m. on Monday.",
             "He met the U.S. envoy, e.g. in Baku."],
        ),
        (
            "en",
            "Growth was 3.5% in 2025. The date was 22.07.2025. Prices rose... but not much. "
            "Then... Nothing.",
            ["Growth was 3.5% in 2025.", "The date was 22.07.2025.",
             "Prices rose... but not much.", "Then...", "Nothing."],
        ),
        (
            "en",
            "Did it work? Yes! “It did.” He smiled. “Why?” he asked. See No. 5 and vol. 2 today.",
            ["Did it work?", "Yes!", "“It did.”", "He smiled.", "“Why?” he asked.",
             "See No. 5 and vol. 2 today."],
        ),
        (
            "en",
            "The talks ended — for now. Iran, Russia etc. Were they allies? Not quite.",
            ["The talks ended — for now.", "Iran, Russia etc.", "Were they allies?", "Not quite."],
        ),
        (
            "ru",
            "В 2025 г. в г. Баку прошёл форум, т.е. встреча. И. Алиев выступил. Рост — 3,5%.",
            ["В 2025 г. в г. Баку прошёл форум, т.е. встреча.", "И. Алиев выступил.",
             "Рост — 3,5%."],
        ),
        (
            "ru",
            "Были яблоки, груши и т.д. Потом — вопросы. «Куда?» — спросил он. «Никуда!» Всё "
            "решилось в XX в. Вот так... а потом ещё.",
            ["Были яблоки, груши и т.д.", "Потом — вопросы.", "«Куда?» — спросил он.",
             "«Никуда!»", "Всё решилось в XX в.", "Вот так... а потом ещё."],
        ),
        (
            "ru",
            "Цена — 5 млн. руб. в год. Итоги 22.07.2025 подвели. — Да, — ответил он. — А вы?",
            ["Цена — 5 млн. руб. в год.", "Итоги 22.07.2025 подвели.", "— Да, — ответил он.",
             "— А вы?"],
        ),
        (
            "az",
            "Prezident İ. Əliyev çıxış etdi. Bakı ş., Nizami küç. 5 ünvanında görüş oldu.",
            ["Prezident İ. Əliyev çıxış etdi.", "Bakı ş., Nizami küç. 5 ünvanında görüş oldu."],
        ),
        (
            "az",
            "Gəlir 3,5 mln. manat olub və s. Sonra «Caliber.az» yazdı. Bu, e.ə. V əsrdə olub. "
            "Nə oldu? Heç nə... Bəlkə də.",
            ["Gəlir 3,5 mln. manat olub və s.", "Sonra «Caliber.az» yazdı.",
             "Bu, e.ə. V əsrdə olub.", "Nə oldu?", "Heç nə...", "Bəlkə də."],
        ),
        (
            "en",
            "1. The first point is here.\nSecond paragraph without a stop\nThird.",
            ["1. The first point is here.", "Second paragraph without a stop", "Third."],
        ),
    ],
)  # fmt: skip
def test_split_sentences(lang: str, text: str, expected: list[str]) -> None:
    assert split_sentences(text, lang) == expected


# ------------------------------------------------------------------ cleaning


@pytest.mark.parametrize(
    ("lang", "text", "expected"),
    [
        ("en", "BAKU, July 22 (Caliber.az) — The talks ended.", "The talks ended."),
        ("en", "WASHINGTON (Reuters) - The talks ended.", "The talks ended."),
        ("en", "22 July 2025 14:27\nThe talks ended.", "The talks ended."),
        ("en", "Baku, 22 July 2025. The talks ended.", "The talks ended."),
        ("ru", "МОСКВА, 22 июля. /ТАСС/. Переговоры завершились.", "Переговоры завершились."),
        ("ru", "Баку, 22 июля 2025 г. — Переговоры завершились.", "Переговоры завершились."),
        ("az", "Bakı, 22 iyul — Danışıqlar başa çatıb.", "Danışıqlar başa çatıb."),
        ("en", "By John Smith\nThe talks ended.", "The talks ended."),
        ("en", "By John Smith | The talks ended.", "The talks ended."),
        ("ru", "Автор: Иван Петров\nПереговоры завершились.", "Переговоры завершились."),
        ("az", "Müəllif: Ə. Məmmədov\nDanışıqlar başa çatıb.", "Danışıqlar başa çatıb."),
        # Not datelines or bylines: the sentence stays whole.
        (
            "en",
            "By the end of the year the talks ended.",
            "By the end of the year the talks ended.",
        ),
        ("en", "22 July was the hottest day.", "22 July was the hottest day."),
        ("en", "NATO, the EU and Iran met.", "NATO, the EU and Iran met."),
    ],
)
def test_summary_never_starts_with_a_dateline_or_byline(
    lang: str, text: str, expected: str
) -> None:
    assert lead(text, 600, lang=lang) == expected


def test_summary_never_repeats_the_title() -> None:
    title = "Iran drills in the Caspian"
    assert lead(f"{title}\nThe drills began.", 600, title=title) == "The drills began."
    assert lead(f"{title}. The drills began.", 600, title=title) == "The drills began."
    assert lead(f"{title} — The drills began.", 600, title=title) == "The drills began."
    assert lead("IRAN DRILLS IN THE CASPIAN: They began.", 600, title=title) == "They began."
    # The title's words opening a longer sentence are that sentence's words.
    assert lead("Iran drills in the Caspian began today.", 600, title=title).startswith("Iran")
    assert lead(title, 600, title=title) == ""


def test_whitespace_quotes_and_dashes_are_normalised() -> None:
    assert lead('He said  "it is done" - finally .\u00a0Then “ spaced ” words.', 600) == (
        "He said “it is done” — finally. Then “spaced” words."
    )
    assert lead('Он сказал: "Это "правда" и нет". Дальше « текст » тут .', 600, lang="ru") == (
        "Он сказал: «Это „правда“ и нет». Дальше «текст» тут."
    )
    assert lead('O dedi: "Bu, doğrudur".', 600, lang="az") == "O dedi: «Bu, doğrudur»."
    assert lead("Tehran's allies' words", 600) == "Tehran’s allies' words"


@pytest.mark.parametrize(
    "line",
    [
        "Views: 290", "Просмотров: 1 254", "Baxış sayı: 85", "Caliber.az © 2025. .",
        "Any use of materials is allowed only if there is a hyperlink to Caliber.az",
        "Liked the story? Share it on social media!", "Share", "Ссылка скопирована",
        "Follow us on Youtube", "Read also: Iran and Russia", "The post X appeared first on Y.",
        "Bütün hüquqlar qorunur.", "ads",
    ],
)  # fmt: skip
def test_furniture_is_recognised(line: str) -> None:
    assert is_chrome(line)
    assert clean_text(f"{line}\nThe talks ended.") == "The talks ended."


@pytest.mark.parametrize(
    "line", ["Share prices fell sharply.", "Subscribers grew by 5%.", "Views differ."]
)
def test_text_that_only_looks_like_furniture_stays(line: str) -> None:
    assert not is_chrome(line)


# ------------------------------------------------------------------ lead and extractive


def test_lead_of_the_corpus_article_is_its_first_sentences() -> None:
    article = corpus_article()
    body = "\n".join(article.paragraphs)
    summary = lead(body, 600, title=article.title)
    first = split_sentences(article.paragraphs[0])
    assert summary.startswith(first[0]) and summary.startswith(" ".join(first[:3]))
    assert 400 < utf16_len(summary) <= 600
    assert summary.endswith(".")


def test_a_single_long_sentence_is_cut_at_a_word_with_an_ellipsis() -> None:
    sentence = "The drills " + "went on and on " * 40 + "until dusk."
    summary = lead(sentence + " Second sentence.", 100)
    assert summary.endswith(ELLIPSIS) and utf16_len(summary) <= 100
    assert sentence.startswith(summary[:-1])
    assert summary[-2] != " "


def test_lexrank_sees_azerbaijani_word_forms_as_search_does() -> None:
    # "Neft" and "Neftin" are one term (the shared analysis's Azerbaijani stripper; Snowball
    # Turkish made them "neft" and "nef"), so the two oil sentences link and outrank the third.
    scores = centrality(
        ["Neft bahalaşır bu gün.", "Neftin qiyməti artır.", "Hava günəşlidir."], "az"
    )
    assert scores[0] == pytest.approx(scores[1])
    assert scores[2] < scores[0] / 3


def test_extractive_keeps_central_sentences_in_order() -> None:
    text = (
        "Russia and Iran held naval drills in the Caspian Sea this week.\n"
        "The weather in Baku was sunny and warm on Tuesday afternoon.\n"
        "The naval drills of Russia and Iran showed their military partnership.\n"
        "Analysts doubt the military partnership of Russia and Iran is deep.\n"
        "A new cafe opened near the old city walls last month."
    )
    summary = extractive(text, 200)
    assert "weather" not in summary and "cafe" not in summary
    kept = summary.split("\n")
    assert len(kept) >= 2 and kept == sorted(kept, key=text.index)
    assert all(sentence in text.split("\n") for sentence in kept)
    assert utf16_len(summary) <= 200


def test_extractive_on_the_corpus_article() -> None:
    article = corpus_article()
    summary = summarise("\n".join(article.paragraphs), 600, mode="extractive", title=article.title)
    body = " ".join(article.paragraphs)
    sentences = summary.split("\n")
    assert 200 < utf16_len(summary) <= 600
    assert all(s in body for s in " ".join(sentences).split(". ") if s)
    positions = [body.index(s.split(". ")[0]) for s in sentences]
    assert positions == sorted(positions)


def test_short_text_is_kept_whole_in_both_modes() -> None:
    text = "One short sentence. And another."
    assert lead(text, 600) == text == extractive(text, 600)


_WORDS = ["Iran", "Russia", "said", "the", "drills", "Mr.", "e.g.", "т.е.", "г.", "3.5%",
          "22.07.2025", "«quoted»", "“quoted”", "J.", "Ə.", "и", "və", "—", "...", "…", "word",
          "Əliyev", "Алиев", "a" * 40, "😀"]  # fmt: skip
_ENDS = [".", "!", "?", "...", "…", ".»", "?”"]


@st.composite
def articles(draw: st.DrawFn) -> str:
    paragraphs = []
    for _ in range(draw(st.integers(1, 4))):
        sentences = []
        for _ in range(draw(st.integers(1, 6))):
            words = draw(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=30))
            sentence = " ".join(words)
            sentences.append(sentence[:1].upper() + sentence[1:] + draw(st.sampled_from(_ENDS)))
        paragraphs.append(draw(st.sampled_from([" ", "  ", " \u00a0"])).join(sentences))
    return "\n".join(paragraphs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=articles(),
    limit=st.integers(20, 800),
    lang=st.sampled_from(["en", "ru", "az"]),
    mode=st.sampled_from(["lead", "extractive"]),
)
def test_summary_length_and_boundaries(text: str, limit: int, lang: str, mode: str) -> None:
    summary = summarise(text, limit, mode=mode, lang=lang)
    assert utf16_len(summary) <= limit
    assert summary == summary.strip() and "  " not in summary
    sentences = split_sentences(clean_text(text, lang=lang), lang)
    parts = split_sentences(summary, lang)
    if not all(part in sentences for part in parts):
        # Only a sentence too long for the limit is cut, at a word, with an ellipsis.
        assert len(parts) == 1 and summary.endswith(ELLIPSIS)
        first = summary[: -len(ELLIPSIS)]
        assert any(s.startswith(first) and utf16_len(s) > limit for s in sentences)
    if mode == "lead":
        # Idempotent: the renderer may apply it again to a stored summary. (A summary with no
        # letter at all, e.g. "😀 😀…", reads as page furniture the second time and is dropped.)
        if any(ch.isalpha() for ch in summary):
            assert lead(summary, limit, lang=lang) == summary
        if sentences and utf16_len(sentences[0]) <= limit:
            assert summary.startswith(sentences[0])


# ------------------------------------------------------------------ extraction


def _no_chrome(text: str, chrome: tuple[str, ...]) -> None:
    for line in chrome:
        assert not re.search(rf"(?<!\w){re.escape(line)}(?!\w)", text), line


def test_extraction_of_the_corpus_page_keeps_the_body_only() -> None:
    article = corpus_article()
    url = "https://caliber.az/en/post/russia-iran"
    extracted = extract_article(caliber_page(url).encode(), url)
    assert extracted.title == article.title.replace('"', '"')
    assert extracted.image_url == "https://caliber.az/media/2025/07/drills.jpg"
    assert extracted.description is not None
    assert extracted.description.startswith(article.paragraphs[0][:100])
    assert extracted.categories == ("Analytics",)
    assert extracted.published_at is not None
    summary = lead(extracted.text, 600, title=extracted.title or "")
    assert summary.startswith(split_sentences(article.paragraphs[0])[0])
    _no_chrome(summary, article.chrome_lines)
    _no_chrome(extractive(extracted.text, 600, title=article.title), article.chrome_lines)
    # The body itself ends with the article's last paragraph, not the signature or counters.
    assert extracted.text.endswith(article.paragraphs[-1][-60:])


@pytest.mark.parametrize(
    ("name", "lang", "first", "chrome"),
    [
        ("caliber-ru.html", "ru", "Совместные учения России и Ирана на Каспии", RU_CHROME),
        ("caliber-az.html", "az", "Rusiya və İranın Xəzər dənizindəki", AZ_CHROME),
    ],
)
def test_extraction_of_ru_and_az_pages(
    name: str, lang: str, first: str, chrome: tuple[str, ...]
) -> None:
    url = f"https://caliber.az/{lang}/post/1"
    extracted = extract_article(page(name).encode(), url)
    for mode in ("lead", "extractive"):
        summary = summarise(extracted.text, 300, mode=mode, title=extracted.title or "", lang=lang)
        assert 100 < utf16_len(summary) <= 300
        _no_chrome(summary, chrome)
        if mode == "lead":
            assert summary.startswith(first)  # the dateline is gone
    assert (
        extracted.image_url
        == f"https://caliber.az/media/2025/07/{'kaspiy' if lang == 'ru' else 'xezer'}.jpg"
    )


def test_a_page_without_a_body_gives_its_description_and_never_its_chrome() -> None:
    article = corpus_article()
    url = "https://caliber.az/en/post/2"
    chrome_only = caliber_page(url).replace(
        "\n".join(f"        <p>{p}</p>" for p in article.paragraphs), ""
    )
    chrome_only = re.sub(r"<p>(?!Any use|Caliber|Analytical|Follow)[^<]{200,}</p>", "", chrome_only)
    extracted = extract_article(chrome_only.encode(), url)
    assert extracted.text == ""
    assert extracted.description and extracted.description.startswith("The joint military")
    assert extract_article(b"\x00\xff not a page", url).text == ""


# ------------------------------------------------------------------ hashtags


@pytest.mark.parametrize(
    ("category", "lang", "tag"),
    [
        ("Analytics", "en", "#Analytics"),
        ("Аналитика", "ru", "#Аналитика"),
        ("Analitika", "az", "#Analitika"),
        ("ANALYTICS", "en", "#Analytics"),
        ("АНАЛИТИКА", "ru", "#Аналитика"),
        ("ANALİTİKA", "az", "#Analitika"),
        ("iqtisadiyyat", "az", "#İqtisadiyyat"),
        ("xarici siyasət", "az", "#XariciSiyasət"),
        ("внешняя политика", "ru", "#ВнешняяПолитика"),
        ("south-caucasus / energy", "en", "#SouthCaucasusEnergy"),
        ("NATO", "en", "#NATO"),
        ("C++", "en", "#C"),
        ("2025", "en", None),
        ("!!!", "en", None),
    ],
)
def test_hashtags_per_language(category: str, lang: str, tag: str | None) -> None:
    assert hashtag(category, lang) == tag
    if tag:
        assert re.fullmatch(r"#\w+", tag) and "_" not in tag


def test_at_most_a_few_hashtags_without_duplicates() -> None:
    tags = hashtags(("Analytics", "ANALYTICS", "analytics", "a", "b", "c", "d", "e"), lang="en")
    assert tags == ["#Analytics", "#A", "#B", "#C", "#D"]
