"""Word forms: how often a search for one form of a word finds a piece holding another form.

The lists below are written by hand, not made by the analysers they measure: each entry is a
base word and one of its forms. The measure goes through the real search path. Per language,
one SQLite store holds a piece per distinct word of the list, whose whole title is that word;
the store's pieces are indexed by bot.services.search, and each form is searched with
parse_query().match() and storage.search.search(). An entry counts as found when the search
for its form finds the piece of its base word. (The other direction, the base word's search
finding the form's piece, gives the same figures: a one-word query finds a one-word piece when
the two words share a term, whichever is searched.)

Each share is measured with the analysis before issue 14 (LEGACY_VERSION: Snowball for Russian
and English, our stripper for Azerbaijani), indexing and searching with it alone, and with the
current one (ANALYZER_VERSION: dictionary lemmas for Russian). The test holds the current
shares to their measured floors and checks that no entry the old analysis found is lost.

Run `python -m tests.unit.test_wordforms` for the table of figures.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.services.search import documents, index_items, parse_query
from bot.text import analysis
from storage import search as index_store
from storage.store import Store
from tests.factories import new_item

NOW = 1_767_225_600.0  # 2026-01-01

Pairs = Sequence[tuple[str, str]]


def _forms(base: str, *forms: str) -> list[tuple[str, str]]:
    return [(base, form) for form in forms]


RUSSIAN: Pairs = [
    # Countries, regions and cities, in the singular (the accusative is the nominative here).
    *_forms("Иран", "Ирана", "Ирану", "Ираном", "Иране"),
    *_forms("Азербайджан", "Азербайджана", "Азербайджану", "Азербайджаном", "Азербайджане"),
    *_forms("Армения", "Армении", "Армению", "Арменией"),
    *_forms("Турция", "Турции", "Турцию", "Турцией"),
    *_forms("Россия", "России", "Россию", "Россией"),
    *_forms("Карабах", "Карабаха", "Карабаху", "Карабахом", "Карабахе"),
    *_forms("Зангезур", "Зангезура", "Зангезуру", "Зангезуром", "Зангезуре"),
    *_forms("Тегеран", "Тегерана", "Тегерану", "Тегераном", "Тегеране"),
    *_forms("Ереван", "Еревана", "Еревану", "Ереваном", "Ереване"),
    *_forms("Шуша", "Шуши", "Шуше", "Шушу", "Шушой"),
    *_forms("Нахчыван", "Нахчывана", "Нахчывану", "Нахчываном", "Нахчыване"),
    *_forms("Гянджа", "Гянджи", "Гяндже", "Гянджу", "Гянджой"),
    *_forms("Москва", "Москвы", "Москве", "Москву", "Москвой"),
    *_forms("Вашингтон", "Вашингтона", "Вашингтону", "Вашингтоном", "Вашингтоне"),
    *_forms("Израиль", "Израиля", "Израилю", "Израилем", "Израиле"),
    *_forms("Баку", "Баку"),  # does not decline
    # People.
    *_forms("Алиев", "Алиева", "Алиеву", "Алиевым", "Алиеве"),
    *_forms("Пашинян", "Пашиняна", "Пашиняну", "Пашиняном", "Пашиняне"),
    *_forms("Эрдоган", "Эрдогана", "Эрдогану", "Эрдоганом", "Эрдогане"),
    *_forms("Путин", "Путина", "Путину", "Путиным", "Путине"),
    *_forms("Байрамов", "Байрамова", "Байрамову", "Байрамовым", "Байрамове"),
    *_forms("Мирзоян", "Мирзояна", "Мирзояну", "Мирзояном", "Мирзояне"),
    *_forms("Лавров", "Лаврова", "Лаврову", "Лавровым", "Лаврове"),
    *_forms("Гаджиев", "Гаджиева", "Гаджиеву", "Гаджиевым"),
    *_forms("Ильхам", "Ильхама", "Ильхаму", "Ильхамом"),
    *_forms("Кочарян", "Кочаряна", "Кочаряну", "Кочаряном"),
    # Common nouns: every case in both numbers (forms that coincide are listed once).
    *_forms(
        "санкция", "санкции", "санкцию", "санкцией", "санкций", "санкциям", "санкциями",
        "санкциях",
    ),
    *_forms(
        "страна", "страны", "стране", "страну", "страной", "стран", "странам", "странами",
        "странах",
    ),
    *_forms(
        "договор", "договора", "договору", "договором", "договоре", "договоры", "договоров",
        "договорам", "договорами", "договорах",
    ),
    *_forms(
        "граница", "границы", "границе", "границу", "границей", "границ", "границам",
        "границами", "границах",
    ),
    *_forms(
        "война", "войны", "войне", "войну", "войной", "войн", "войнам", "войнами", "войнах"
    ),
    *_forms(
        "министр", "министра", "министру", "министром", "министре", "министры", "министров",
        "министрам", "министрами", "министрах",
    ),
    *_forms(
        "соглашение", "соглашения", "соглашению", "соглашением", "соглашении", "соглашений",
        "соглашениям", "соглашениями", "соглашениях",
    ),
    *_forms("президент", "президента", "президенту", "президентом", "президентов"),
    *_forms("переговоры", "переговоров", "переговорам", "переговорами", "переговорах"),
    *_forms("мир", "мира", "миру", "миром", "мире"),
    *_forms("газ", "газа", "газу", "газом", "газе"),
    *_forms("нефть", "нефти", "нефтью"),
    *_forms("путь", "пути", "путём", "путей", "путям"),
    *_forms("время", "времени", "временем", "времена"),
    *_forms("ёлка", "ёлки", "елке", "ёлку", "ёлкой", "ёлок"),
    # Adjectives.
    *_forms(
        "азербайджанский", "азербайджанского", "азербайджанскому", "азербайджанским",
        "азербайджанском", "азербайджанская", "азербайджанской", "азербайджанскую",
        "азербайджанское", "азербайджанские", "азербайджанских", "азербайджанскими",
    ),
    *_forms("иранский", "иранского", "иранская", "иранские", "иранских"),
    *_forms("новый", "нового", "новая", "новое", "новые", "новых", "новым"),
    *_forms("военный", "военного", "военная", "военные", "военных"),
    *_forms("энергетический", "энергетической", "энергетическая", "энергетических"),
    # Verbs: persons, tenses, a gerund; suppletive stems (идти: шёл).
    *_forms("заявить", "заявил", "заявила", "заявили", "заявит", "заявят", "заявлю", "заявив"),
    *_forms("подписать", "подписал", "подписала", "подписали", "подпишет", "подпишут"),
    *_forms(
        "говорить", "говорю", "говоришь", "говорит", "говорим", "говорите", "говорят",
        "говорил", "говорила", "говорили",
    ),
    *_forms("встретиться", "встретился", "встретились", "встретится", "встретятся"),
    *_forms("обсуждать", "обсуждают", "обсуждает", "обсуждал", "обсуждали"),
    *_forms("стать", "стал", "стала", "стали", "станет", "станут"),
    *_forms("вести", "ведёт", "ведут", "вёл", "вели"),
    *_forms("идти", "идёт", "идут", "шёл", "шла", "шли"),
    # Written after the first measurement, to try the rule for words the dictionary does not
    # know on names it was not chosen on.
    *_forms("Агдам", "Агдама", "Агдаме", "Агдамом", "Агдаму"),
    *_forms("Лачин", "Лачина", "Лачином", "Лачине"),
    *_forms("Кельбаджар", "Кельбаджара", "Кельбаджаре", "Кельбаджаром"),
    *_forms("Бабаян", "Бабаяна", "Бабаяном", "Бабаяну"),
    *_forms("Симонян", "Симоняна", "Симоняну", "Симоняне"),
    *_forms("Арутюнян", "Арутюняна", "Арутюняном"),
    *_forms("Мамедъяров", "Мамедъярова", "Мамедъяровым", "Мамедъярову"),
    *_forms("Алиева", "Алиевой"),
    *_forms(
        "зангезурский", "зангезурского", "зангезурском", "зангезурскому", "зангезурская",
        "зангезурской",
    ),
    *_forms("нахчыванский", "нахчыванского", "нахчыванской", "нахчыванские"),
    *_forms("Джейхун", "Джейхуна", "Джейхуном"),
    *_forms("Хикмет", "Хикмета", "Хикметом"),
    *_forms("Сюник", "Сюника", "Сюнике", "Сюником"),
    *_forms("Нагорный", "Нагорного", "Нагорном"),
    *_forms("Макрон", "Макрона", "Макроном", "Макрону"),
    *_forms("Байден", "Байдена", "Байденом", "Байдену"),
    *_forms("Трамп", "Трампа", "Трампом", "Трампу"),
    *_forms("Зеленский", "Зеленского", "Зеленским"),
    *_forms("Шольц", "Шольца", "Шольцем"),
    *_forms("Фидан", "Фидана", "Фиданом"),
    *_forms("Мурадян", "Мурадяна", "Мурадяном"),
]  # fmt: skip

AZERBAIJANI: Pairs = [
    *_forms("Azərbaycan", "Azərbaycanın", "Azərbaycana", "Azərbaycanı", "Azərbaycanda",
            "Azərbaycandan"),
    *_forms("Bakı", "Bakının", "Bakıya", "Bakını", "Bakıda", "Bakıdan"),
    *_forms("ölkə", "ölkənin", "ölkəyə", "ölkəni", "ölkədə", "ölkədən", "ölkələr", "ölkələrin",
            "ölkəsi", "ölkəmiz", "ölkəmizin"),
    *_forms("Ermənistan", "Ermənistanın", "Ermənistana", "Ermənistanı", "Ermənistanda",
            "Ermənistandan"),
    *_forms("İran", "İranın", "İrana", "İranı", "İranda", "İrandan"),
    *_forms("Qarabağ", "Qarabağın", "Qarabağa", "Qarabağı", "Qarabağda", "Qarabağdan"),
    *_forms("prezident", "prezidentin", "prezidentə", "prezidenti", "prezidentimiz"),
    *_forms("neft", "neftin", "neftə", "nefti", "neftdə", "neftdən"),
    *_forms("sülh", "sülhün", "sülhə", "sülhü", "sülhdə"),
    *_forms("müharibə", "müharibənin", "müharibəyə", "müharibədə", "müharibəsi"),
    *_forms("şəhər", "şəhərin", "şəhərə", "şəhərdə", "şəhərlər", "şəhərimiz"),
    *_forms("dövlət", "dövlətin", "dövlətə", "dövləti", "dövlətlər"),
    *_forms("nazir", "nazirin", "nazirə", "naziri", "nazirlər", "nazirləri"),
    *_forms("Türkiyə", "Türkiyənin", "Türkiyəyə", "Türkiyədə", "Türkiyədən"),
    *_forms("xalq", "xalqın", "xalqa", "xalqımız"),
    *_forms("torpaq", "torpağı", "torpaqlar", "torpaqlarımız"),  # q → ğ before a vowel
]  # fmt: skip

ENGLISH: Pairs = [
    *_forms("sanction", "sanctions", "sanctioned", "sanctioning"),
    *_forms("negotiate", "negotiated", "negotiating", "negotiates"),
    *_forms("country", "countries"),
    *_forms("talk", "talks", "talked", "talking"),
    *_forms("sign", "signed", "signing", "signs"),
    *_forms("meet", "meeting", "meets", "met"),
    *_forms("agree", "agreed", "agreeing", "agrees"),
    *_forms("president", "presidents"),
    *_forms("pipeline", "pipelines"),
    *_forms("announce", "announced", "announces", "announcing"),
    *_forms("minister", "ministers"),
    *_forms("policy", "policies"),
    *_forms("say", "says", "said"),
    *_forms("increase", "increased", "increasing"),
    *_forms("run", "running", "ran"),
]

# Different words, which a search for one should not find in a piece holding the other. Some
# do all the same, and are counted: a stemmer cuts them to one stem, or the dictionary knows
# the one form as a form of both words ("Баку" is also a case of "бак", a tank).
UNRELATED: Pairs = [
    ("Ира", "Ирана"), ("Ирой", "Ираном"), ("Ирина", "Ирана"), ("бак", "Баку"),
    ("баки", "Баку"), ("война", "военный"), ("новости", "новый"), ("карабин", "Карабах"),
    ("армия", "Армении"), ("газета", "газ"), ("договориться", "договор"),
    ("граничить", "граница"), ("шуба", "Шуша"), ("мирный", "мира"), ("путина", "путь"),
    ("Алия", "Алиев"), ("мирить", "мир"), ("учёный", "учения"), ("Сталин", "стали"),
    ("ранний", "Иран"),
]  # fmt: skip

LISTS: dict[str, Pairs] = {"ru": RUSSIAN, "az": AZERBAIJANI, "en": ENGLISH}

# The current analysis's shares may not fall below these: the measured shares, rounded down
# so that one form lost more falls below (see the module's table).
FLOORS = {"ru": 1.0, "az": 0.90, "en": 0.90}
# Unrelated pairs that may meet at most (measured).
MOST_UNRELATED = 3
# Entries the old analysis found and the current one does not, with why: none.
LOST: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Share:
    """The entries of one language's list that a search found, with one analysis."""

    lang: str
    found: frozenset[tuple[str, str]]
    total: int

    @property
    def share(self) -> float:
        return len(self.found) / self.total


async def measure(path: Path, lang: str, pairs: Pairs, *, legacy: bool) -> Share:
    """Index a piece per distinct word of `pairs` in a new store at `path`; search each form.

    `legacy`: index and search with analysis LEGACY_VERSION alone, else the current one.
    """
    store = await Store.open(path)
    try:
        feed = await store.ensure_feed(f"https://caliber.az/{lang}/rss", lang)
        distinct = list(dict.fromkeys(word for pair in pairs for word in pair))
        outcome = await store.store_poll(
            feed.id,
            [
                new_item(n, title=word, summary="", identity=f"{lang}-{n}", published_at=NOW)
                for n, word in enumerate(distinct)
            ],
            etag=None, last_modified=None, now=NOW, next_poll_at=NOW, max_age=1e9, backfill=0,
        )  # fmt: skip
        pieces = {item.title: item.id for item in outcome.new_items}
        if legacy:
            await index_store.index_docs(store, documents(outcome.new_items, legacy=True))
        else:
            await index_items(store, outcome.new_items)
        found = set()
        for base, form in pairs:
            groups = parse_query(form).match([lang], legacy=legacy, current=not legacy)
            assert groups is not None, form
            page = await index_store.search(store, groups, now=NOW, limit=len(distinct))
            if pieces[base] in {hit.item.id for hit in page.hits}:
                found.add((base, form))
        return Share(lang, frozenset(found), len(pairs))
    finally:
        await store.close()


Measured = dict[str, tuple[Share, Share]]


async def measure_all(directory: Path) -> Measured:
    """Per list: what the old analysis found, and what the current one finds."""
    # Each list by name, with the language its words are analysed in.
    lists = {
        **{lang: (lang, pairs) for lang, pairs in LISTS.items()},
        "unrelated": ("ru", UNRELATED),
    }
    return {
        name: (
            await measure(directory / f"{name}-old.sqlite3", lang, pairs, legacy=True),
            await measure(directory / f"{name}-new.sqlite3", lang, pairs, legacy=False),
        )
        for name, (lang, pairs) in lists.items()
    }


def table(shares: Measured) -> str:
    """The figures as a markdown table, with the forms each analysis misses."""
    names = {"ru": "Russian", "az": "Azerbaijani", "en": "English"}
    before, now = analysis.LEGACY_VERSION, analysis.ANALYZER_VERSION
    lines = [
        f"| language | forms | found, analysis {before} (before) | found, analysis {now} (now) |",
        "|---|---:|---:|---:|",
    ]
    for lang, name in names.items():
        old, new = shares[lang]
        lines.append(
            f"| {name} | {old.total} | {len(old.found)} ({old.share:.1%}) "
            f"| {len(new.found)} ({new.share:.1%}) |"
        )
    old, new = shares["unrelated"]
    lines += [
        f"| Russian, unrelated words that meet (lower is better) | {old.total} "
        f"| {len(old.found)} | {len(new.found)} |",
        "",
    ]
    for lang, name in names.items():
        for label, share in zip(("before", "now"), shares[lang], strict=True):
            missed = [form for pair in LISTS[lang] if pair not in share.found for form in pair[1:]]
            lines.append(f"{name}, not found {label}: {', '.join(missed) or 'none'}")
    for label, share in zip(("before", "now"), shares["unrelated"], strict=True):
        met = [" / ".join(pair) for pair in UNRELATED if pair in share.found]
        lines.append(f"Unrelated words that meet {label}: {', '.join(met) or 'none'}")
    return "\n".join(lines)


async def test_word_forms_find_their_base_word(tmp_path: Path) -> None:
    shares = await measure_all(tmp_path)
    print("\n" + table(shares))  # shown with pytest -s
    assert len(RUSSIAN) >= 150 and len(AZERBAIJANI) >= 50 and len(ENGLISH) >= 30
    for lang in LISTS:
        old, new = shares[lang]
        assert new.share >= FLOORS[lang], (lang, new.share)
        lost = {form for base, form in old.found - new.found} - set(LOST)
        assert not lost, (lang, sorted(lost))
    assert len(shares["unrelated"][1].found) <= MOST_UNRELATED


def main() -> int:
    with tempfile.TemporaryDirectory() as directory:
        print(table(asyncio.run(measure_all(Path(directory)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
