"""Search latency over a generated store of 100,000 pieces in English, Russian and Azerbaijani.

Builds a temporary SQLite file (or fills a PostgreSQL database given with --url) through the
real store and indexer (store_poll, then index_items as the poller calls it), then runs a fixed
set of queries and reports, per query, p50 and p95 of:

- "search": the storage-layer search the bot uses (bot.services.search query analysis +
  storage.search: language filter, relevance with recency, one page of items read back). The
  query analysis is inside that time, and its own p95 is reported too ("analysis p95"). By
  default its word caches are warm, as in the bot, where indexing has met most words a reader
  searches for; `--cold-analysis` empties them before every timed search, so each one pays
  for its words as the first query for them would (pymorphy3's dictionary for Russian words,
  Snowball's stemmer for English ones), and
- "bare": the engine's bare ranked match (storage.search.bare_match), with the same terms:
  `SELECT rowid FROM search_fts WHERE search_fts MATCH ? ORDER BY bm25(search_fts) LIMIT 5`
  on SQLite, `SELECT id FROM search_docs WHERE doc @@ ? ORDER BY ts_rank(doc, ?) DESC LIMIT 5`
  on PostgreSQL, on the same table and connection.

Searches and bare matches alternate, so both see the same machine; each run gives a ratio of
the two per query, and the table shows medians over the runs.

Run: `python -m bench.search_bench` (add `--pieces 20000` for a quicker run, `--keep PATH` to
keep the SQLite database, `--url postgresql://…` to run on an empty or earlier-filled
PostgreSQL database instead). Not a test: it prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bot import heap
from bot.services import search as search_service
from bot.text import analysis
from storage import search as index_store
from storage.models import NewItem
from storage.store import Store

NOW = 1_767_225_600.0  # 2026-01-01
SPAN = 3 * 365 * 86400.0  # pieces spread over three years


def _split(words: str) -> list[str]:
    return words.split()


# Function words take the top frequency ranks, as in real text; topic words (the ones readers
# search for) are spread over ranks 30-800, where a word occurs in roughly 1-20% of the pieces
# of its language; made-up words fill the rest of a 30,000-word vocabulary.
FUNCTION_WORDS = {
    "en": _split("the of and to in a is that for on with as by it from at this are be has"),
    "ru": _split("и в на не что с по как к из за от это для о а но его он до"),
    "az": _split("və bu ilə da ki üçün bir olan isə də ən görə artıq daha belə həm öz çox onun"),
}
TOPIC_WORDS = {
    "en": _split(
        "iran sanctions sanction oil gas pipeline russia azerbaijan baku armenia peace treaty "
        "border war military drills caspian sea energy europe turkey election president "
        "minister economy trade corridor security alliance nuclear talks ceasefire region "
        "strategy israel tehran moscow ankara washington china deal export market crisis "
        "policy government army drones analysis partnership cooperation conflict"
    ),
    "ru": _split(
        "Иран Ирана Ирану Ираном санкции санкций нефть нефти газ газа трубопровод Россия "
        "России Азербайджан Азербайджана Баку Армения Армении мир мирный договор граница "
        "границы война войны учения Каспий энергетика Европа Турция выборы президент министр "
        "экономика торговля коридор безопасность союз переговоры регион стратегия Израиль "
        "Тегеран Москва Китай сделка экспорт рынок кризис политика правительство армия ёлка"
    ),
    "az": _split(
        "İran İranın sanksiyalar sanksiya neft neftin qaz qazın boru kəməri Rusiya Rusiyanın "
        "Azərbaycan Azərbaycanın Bakı Bakıda Ermənistan sülh müqavilə sərhəd müharibə təlim "
        "Xəzər enerji Avropa Türkiyə seçki prezident nazir iqtisadiyyat ticarət dəhliz "
        "təhlükəsizlik İĞDIR ölkə ölkələr region strategiya İsrail Tehran Moskva Çin saziş "
        "ixrac bazar böhran siyasət hökumət ordu"
    ),
}
SYLLABLES = {
    "en": _split("ka ri to men sel dar vo lin pra ste qua bor nel fi gor tan ser ul ob ev"),
    "ru": _split("ка ри то мен сел дар во лин пра сте ква бор нел фи гор тан сер ул об ев"),
    "az": _split("ka ri to mən səl dar vo lin pra ştə qa bor nel fi gör tan şer ul ob əv"),
}
VOCABULARY = 30_000

# (label, query text, chat language; "*" searches all languages, like the widen button)
QUERIES = (
    ("en one topic word", "sanctions", "en"),
    ("en two words", "iran oil", "en"),
    ("en three words", "caspian military drills", "en"),
    ("en rare word (12 pieces)", "borborkavo", "en"),
    ("ru word form", "Ирана", "ru"),
    ("ru two words", "санкции нефть", "ru"),
    ("az diacritics", "IĞDIR", "az"),
    ("az word forms", "Azərbaycanın neftin", "az"),
    ("all languages", "iran", "*"),
    ("en function word (every piece)", "the", "en"),
    ("no match", "zzqx", "en"),
    ("hostile input", '"iran" OR NEAR(oil*) ^gas); DROP TABLE items; --', "en"),
)


def make_vocabulary(rng: random.Random, lang: str) -> list[str]:
    """Return the language's words, most frequent first."""
    words = list(FUNCTION_WORDS[lang])
    seen = set(words) | set(TOPIC_WORDS[lang])
    syllables = SYLLABLES[lang]
    while len(words) < VOCABULARY - len(TOPIC_WORDS[lang]):
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    for topic in TOPIC_WORDS[lang]:
        words.insert(rng.randint(30, 800), topic)
    return words


def make_pieces(count: int, seed: int = 7) -> dict[str, list[NewItem]]:
    """Return `count` pieces, a third in each language, with titles, texts and dates."""
    rng = random.Random(seed)
    vocab = {lang: make_vocabulary(rng, lang) for lang in FUNCTION_WORDS}
    weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(VOCABULARY)))
    pieces: dict[str, list[NewItem]] = {lang: [] for lang in FUNCTION_WORDS}
    langs = list(FUNCTION_WORDS)
    for n in range(count):
        lang = langs[n % len(langs)]
        words = vocab[lang]
        title = " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(6, 10)))
        summary = " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(50, 80)))
        pieces[lang].append(
            NewItem(
                identity=f"{lang}-{n}",
                link=f"https://caliber.az/{lang}/post/{n}",
                title=title.capitalize(),
                summary=summary.capitalize() + ".",
                published_at=NOW - rng.random() * SPAN,
                content_hash=hashlib.sha256(f"{title}\x1f{summary}".encode()).hexdigest(),
            )
        )
    for items in pieces.values():
        items.sort(key=lambda item: item.published_at or 0.0)
    return pieces


async def build_store(target: str | Path, count: int) -> Store:
    """Open the store at `target`, filled with `count` pieces unless it has them already."""
    store = await Store.open(target)
    await search_service.attach_index(store)
    if await store.count_items() < count:
        await fill(store, count)
    await index_store.refresh_recency(store, NOW)  # as the bot's hourly upkeep does
    return store


async def fill(store: Store, count: int) -> None:
    """Fill the store the way a bot running for SPAN would have: pieces in publication order.

    Items get their ids as the bot first sees them, so ids rise with publication time across
    all three feeds, as they do in a store the poller has filled over the years.
    """
    pieces = make_pieces(count)
    feeds = {
        lang: await store.ensure_feed(f"https://caliber.az/{lang}/rss", lang) for lang in pieces
    }
    timeline = sorted(
        (
            (item.published_at or 0.0, lang, item)
            for lang, items in pieces.items()
            for item in items
        ),
        key=lambda entry: entry[0],
    )
    for start in range(0, len(timeline), 2000):
        chunk = timeline[start : start + 2000]
        for lang, feed in feeds.items():
            outcome = await store.store_poll(
                feed.id,
                [item for _, item_lang, item in chunk if item_lang == lang],
                etag=None,
                last_modified=None,
                now=NOW,
                next_poll_at=NOW,
                max_age=SPAN,
                backfill=0,
            )
            await search_service.index_items(store, outcome.new_items)  # as the poller does


@dataclass
class Timing:
    label: str
    search_p50: float
    search_p95: float
    bare_p50: float
    bare_p95: float
    matches: int
    analysis_p95: float  # the query analysis alone, inside "search"

    @property
    def p50_ratio(self) -> float:
        return self.search_p50 / self.bare_p50

    @property
    def p95_ratio(self) -> float:
        return self.search_p95 / self.bare_p95


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(store: Store, repeats: int, *, cold: bool = False) -> list[Timing]:
    timings = []
    for label, text, lang in QUERIES:
        langs = list(FUNCTION_WORDS) if lang == "*" else [lang]
        groups = search_service.parse_query(text).match(langs)
        search_ms: list[float] = []
        bare_ms: list[float] = []
        analysis_ms: list[float] = []
        matches = 0
        for _ in range(repeats):
            if cold:
                analysis.clear_caches()
            start = time.perf_counter()
            wanted = search_service.parse_query(text).match(langs)
            analysis_ms.append((time.perf_counter() - start) * 1000)
            if wanted is not None:
                page = await index_store.search(store, wanted, now=NOW)
                matches = page.total
            search_ms.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            if groups is not None:
                await index_store.bare_match(store, groups, 5)
            bare_ms.append((time.perf_counter() - start) * 1000)
        timings.append(
            Timing(
                label,
                statistics.median(search_ms),
                percentile(search_ms, 0.95),
                statistics.median(bare_ms),
                percentile(bare_ms, 0.95),
                matches,
                percentile(analysis_ms, 0.95),
            )
        )
    return timings


def table(
    runs: list[list[Timing]],
    pieces: int,
    build_seconds: float,
    repeats: int,
    backend: str,
    *,
    cold: bool = False,
) -> str:
    """The markdown table: per query, the median over runs of each figure and ratio."""
    lines = [
        f"Search latency ({backend}), {pieces:,} pieces (en/ru/az), 5 results per page, in ms "
        f"(medians of {len(runs)} runs of {repeats} searches per query; query analysis "
        f"{'cold: word caches emptied before each search' if cold else 'warm'}):",
        "",
        "| query | matches | search p50 | search p95 | bare match p50 | bare match p95 "
        "| p50 ratio | p95 ratio | analysis p95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst = 0.0
    for per_query in zip(*runs, strict=True):
        first = per_query[0]
        figures = [
            statistics.median(figure)
            for figure in zip(
                *((t.search_p50, t.search_p95, t.bare_p50, t.bare_p95, t.p50_ratio, t.p95_ratio,
                   t.analysis_p95)
                  for t in per_query),
                strict=True,
            )
        ]  # fmt: skip
        worst = max(worst, figures[1])
        cells = " | ".join(f"{value:.2f}" for value in figures)
        lines.append(f"| {first.label} | {first.matches:,} | {cells} |")
    lines += ["", f"Worst search p95: {worst:.2f} ms. Store built in {build_seconds:.0f} s."]
    return "\n".join(lines)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=100_000)
    # A p95 of 200 searches is the 10th slowest: runs of 200 put the same query's p95 ratio
    # anywhere from 1.09 to 1.52 where 3,000 gave 1.34. 1,000 a run steadies it.
    parser.add_argument("--repeats", type=int, default=1000, help="timed searches per query")
    parser.add_argument("--runs", type=int, default=3, help="runs; each figure is their median")
    parser.add_argument("--keep", type=Path, help="SQLite database file to create or reuse")
    parser.add_argument("--url", help="a postgresql:// database to fill (or reuse) instead")
    parser.add_argument(
        "--cold-analysis",
        action="store_true",
        help="empty the query analysis's word caches before every timed search",
    )
    args = parser.parse_args(argv)
    cold = args.cold_analysis
    with tempfile.TemporaryDirectory() as tmp:
        target = args.url or args.keep or Path(tmp) / "bench.sqlite3"
        started = time.perf_counter()
        store = await build_store(target, args.pieces)
        build_seconds = time.perf_counter() - started
        backend = store.dialect
        try:
            await measure(store, 5)  # warm the page cache (and load the Russian dictionary)
            heap.settle()  # as the bot does once it has started (bot/heap.py)
            runs = [await measure(store, args.repeats, cold=cold) for _ in range(args.runs)]
        finally:
            await store.close()
    print(table(runs, args.pieces, build_seconds, args.repeats, backend, cold=cold))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
