"""Summaries of news text in English, Russian and Azerbaijani: cleaning, sentence splitting and
the two summarisers (lead: the first sentences; extractive: the most central sentences).

Pure functions without I/O. `lead` is cheap enough for the renderer to call on every post; it
is idempotent, so a summary made once by the enricher passes through the renderer unchanged
when it fits.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from bot.text.analysis import term, words
from bot.text.plain import cut_at_word, normalise_whitespace, utf16_len

LEAD = "lead"
EXTRACTIVE = "extractive"

# Work on a bounded prefix: the lead never needs more than a few times its length.
_PREFIX_FACTOR = 4
_PREFIX_EXTRA = 2000
_EXTRACTIVE_MAX_CHARS = 30_000
_EXTRACTIVE_MAX_SENTENCES = 150  # LexRank is quadratic in the sentence count

_UPPER = "A-ZА-ЯЁƏİÖÜĞŞÇ"
_OPENERS = "«“„‘\"'([{—–-"
_CLOSERS = "»”’\"')]}"
# A candidate sentence end: terminal punctuation, closing quotes/brackets, then a space.
_END = re.compile(r"(\.{3}|[.!?…]+)([" + re.escape(_CLOSERS) + r"]*)(\s+)")

# Abbreviations (lower case, without the final period). Never end a sentence:
_NEVER_FINAL = frozenset(
    {
        # en
        "mr", "mrs", "ms", "dr", "prof", "sen", "rep", "gov", "gen", "col", "lt", "maj", "capt",
        "cmdr", "sgt", "st", "mt", "ft", "rev", "hon", "pres", "vs", "v", "e.g", "i.e", "cf",
        "viz", "approx", "ca", "dept", "univ", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
        "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "u.n", "e.u", "a.m", "p.m",
        # ru
        "т.е", "т.к", "т.н", "т.ч", "напр", "см", "ср", "им", "ул", "просп", "пер", "пл", "кв",
        "рис", "табл", "гл", "проф", "акад", "доц", "ген", "полк", "гос", "обл", "пос", "тов",
        "англ", "нем", "франц", "лат", "рус", "греч", "вкл", "искл", "ок", "спб", "г-н", "г-жа",
        # az
        "akad", "dos", "cən", "küç", "pr", "ş", "r", "b.e",
    }
)  # fmt: skip
# End a sentence only when a capital letter follows ("и т.д. Потом", "5 mln. manat"):
_MAYBE_FINAL = frozenset(
    {
        "etc", "inc", "ltd", "co", "corp", "jr", "sr", "bn", "mln", "mn",
        "т.д", "т.п", "др", "пр", "тыс", "млн", "млрд", "трлн", "руб", "коп", "долл", "н.э",
        "км", "кг",
        "mlrd", "min", "maks", "e.ə", "və s", "və b", "və i.a",
    }
)  # fmt: skip
# Before a number they never end a sentence ("No. 5", "ст. 12", "səh. 3").
_NUMBER_PREFIX = frozenset(
    {"no", "nos", "p", "pp", "vol", "art", "ch", "fig", "figs", "sec", "д", "п", "ст", "ч", "с",
     "стр", "№", "səh"}
)  # fmt: skip
# "г." (year or city), "в." (century): an end only after a number ("в 2025 г. Потом").
_AFTER_NUMBER = frozenset({"г", "гг", "в", "вв"})
_ROMAN_OR_NUMBER = re.compile(r"^(?:\d+(?:[-–]\d+)?|[IVXLC]+)$")
_DOTTED = re.compile(r"^(?:[^\W\d_]{1,2}\.)+[^\W\d_]{1,2}$")

_MONTHS = (
    r"(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|"
    r"январ[ья]|феврал[ья]|марта?|апрел[ья]|ма[йя]|июн[ья]|июл[ья]|августа?|сентябр[ья]|"
    r"октябр[ья]|ноябр[ья]|декабр[ья]|"
    r"yanvar|fevral|mart|aprel|may|iyun|iyul|avqust|sentyabr|oktyabr|noyabr|dekabr)\.?"
)
_DATE = (
    r"(?:\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}-\d{2}-\d{2}"
    r"|\d{1,2}\s+" + _MONTHS + r"(?:,?\s+\d{4})?(?:\s*(?:г\.|года|-ci il|-cü il|il))?"
    r"|" + _MONTHS + r"\s+\d{1,2}(?:,?\s+\d{4})?)"
)
_TIME = r"(?:\d{1,2}[:.]\d{2}(?:\s*(?i:[ap]\.?m\.?))?)"
_AGENCY = r"(?:\([^()\n]{1,40}\)|/[^/\n]{1,30}/)"
_CITY = r"[" + _UPPER + r"][\w'’.-]*(?:[ -][" + _UPPER + r"][\w'’.-]*){0,2}"
_CAPS_CITY = r"[" + _UPPER + r"]{2,}(?:[ -][" + _UPPER + r"]{2,}){0,2}"
_LEAD_SEP = r"(?:\s*[—–|:.-]+\s*|\s+(?=[" + _UPPER + r"«“\d])|\s*$)"
_DATELINES = (
    re.compile(
        r"^(?:" + _CITY + r"\s*,\s*)?" + _DATE + r"(?:,?\s*(?:at\s+)?" + _TIME + r")?"
        r"(?:\s*[.,]?\s*" + _AGENCY + r")?" + _LEAD_SEP
    ),
    re.compile(r"^" + _CAPS_CITY + r"\s*" + _AGENCY + r"\s*[—–,:-]+\s*"),
    re.compile(r"^" + _TIME + r"\s*$"),
)
_BYLINE_WORD = r"(?i:by|written by|author|автор(?: текста)?|текст|müəllif)"
_NAME = r"[" + _UPPER + r"][\w'’-]*\.?(?:\s+[" + _UPPER + r"][\w'’-]*\.?){0,3}"
_BYLINE = re.compile(
    r"^" + _BYLINE_WORD + r"\s*:?\s+" + _NAME + r"(?:\s*,\s*[^\n,.]{1,40})?"
    r"(?:\s*[|—–:]\s*|(?<=\w)\.\s+|\s*$)"
)

# Page or feed furniture, never reader text: marks found anywhere in a short paragraph…
_CHROME_MARKS = re.compile(
    r"©|\(c\)\s*\d{4}|all rights reserved|все права защищены|bütün hüquqlar"
    r"|any use of materials|использование материалов|materiallardan istifadə"
    r"|appeared first on|впервые появил"
    r"|ссылка скопирована|link copied|copy link|keçid kopyalandı"
    r"|share (?:it|this) (?:on|with)|поделитесь (?:ею|им|этой)|sosial şəbəkələrdə paylaş",
    re.IGNORECASE,
)
# …and whole lines of their own.
_CHROME_LINES = re.compile(
    r"(?:views?|просмотр\w*|baxış\w*(?: sayı)?|oxunub|прочитано)\s*:?\s*[\d\s.,kк]+"
    r"|(?:share|поделиться|paylaş)\s*:?"
    r"|(?:follow us|subscribe to|подписывайтесь|bizi izləyin|abunə olun)\b.*"
    r"|(?:read (?:also|more)|see also|читайте (?:также|еще|ещё)|ещё по теме|həmçinin oxu)\b.*"
    r"|advertisement|реклама|reklam|ads",
    re.IGNORECASE,
)
_CHROME_MAX = 200  # a longer paragraph is text, whatever words it contains
_LABEL_MAX = 60

_WORD = re.compile(r"\w+")
# Stray spaces inside quotes and brackets or before punctuation; the quotes differ by language.
_SPACE_BEFORE = {
    "en": re.compile(r"[ \t]+([,.;:!?…”)\]])(?=\s|$|[“‘])"),
    "": re.compile(r"[ \t]+([,.;:!?…»“)\]])(?=\s|$|[«„])"),
}
_SPACE_AFTER = {"en": re.compile(r"([“(\[])[ \t]+"), "": re.compile(r"([«„(\[])[ \t]+")}
_SPACED_HYPHEN = re.compile(r"(?<=\S) (?:-|--|–) (?=\S)")
_DOUBLE_QUOTES = '"“”„‟«»'
_APOSTROPHE = re.compile(r"(?<=\w)'(?=\w)")
_TRIM_AFTER_TITLE = re.compile(r"^[\s.,:;!?…»”’)\]—–|-]+")

_STOPWORDS = frozenset(
    """a an the and or but if of in on at to for from by with as is are was were be been being
    it its this that these those he she they we you i his her their our not no so than then
    also has have had will would can could may might which who whom what when where how all
    any some more most such into over under after before about between during while there
    и в во на с со по к ко о об от до за из у же ли не ни но а или что как это этот эта эти
    то так для при без над под про его ее её их он она они мы вы я был была были быть есть
    также уже еще ещё только который которая которые которых чтобы если бы
    və ilə bu o da də ki üçün amma lakin ya hər bir olan olaraq isə artıq daha çox kimi
    onun onlar biz siz mən sən deyil həm də görə sonra əvvəl qədər""".split()  # noqa: SIM905 - a word list reads better as text
)


def split_sentences(text: str, lang: str = "en") -> list[str]:
    """Split text into sentences; a line break always ends one.

    The abbreviations of all three languages are known whatever `lang` says: Russian and
    Azerbaijani pieces quote English names and titles, and the reverse.
    """
    return [s for s, _ in _sentences(text, lang)]


def _sentences(text: str, lang: str) -> list[tuple[str, bool]]:
    """Return (sentence, starts a paragraph) pairs."""
    out: list[tuple[str, bool]] = []
    for paragraph in text.split("\n"):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        first = True
        for sentence in _split_paragraph(paragraph, lang):
            out.append((sentence, first))
            first = False
    return out


def _split_paragraph(paragraph: str, lang: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for match in _END.finditer(paragraph):
        end = match.end(2)
        sentence = paragraph[start:end].strip()
        # Punctuation alone ("...", "—") is no sentence: it stays with what follows.
        if any(c.isalnum() for c in sentence) and _is_boundary(paragraph, start, match, lang):
            sentences.append(sentence)
            start = match.end()
    rest = paragraph[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


def _is_boundary(text: str, start: int, match: re.Match[str], lang: str) -> bool:
    punct = match.group(1)
    following = _next_letter(text, match.end())
    if following is None:
        return True
    next_lower = following.islower()
    next_upper = following.isupper()
    if punct != ".":
        # ?, !, … and "...": the next sentence starts with a capital or a digit.
        return not next_lower
    word = _word_before(text, match.start(1))
    lowered = word.lower()
    candidate = text[start : match.start(1)].strip()
    if candidate.isdigit():
        return False  # "1. First point" is a list marker, not a sentence
    before_word = match.start(1) - len(word)
    while before_word > 0 and text[before_word - 1].isspace():
        before_word -= 1
    previous = _word_before(text, before_word).lower()
    two_words = f"{previous} {lowered}"
    if two_words in _MAYBE_FINAL:
        return next_upper and not _roman_follows(text, match.end())
    if two_words in _NEVER_FINAL:
        return False
    if lowered in _NUMBER_PREFIX and following.isdigit():
        return False
    if lowered in _AFTER_NUMBER:
        return next_upper and bool(_ROMAN_OR_NUMBER.match(previous.upper()))
    if lowered in _NEVER_FINAL:
        return False
    if lowered in _MAYBE_FINAL:
        return next_upper and not _roman_follows(text, match.end())
    if len(word) == 1 and word.isalpha() and word.isupper():
        return False  # an initial: "J. Smith", "И. Алиев", "Ə. Əliyev"
    if _DOTTED.match(word):
        return next_upper and len(word) > 4  # "U.S." no; "т.е." no; "a.b.c.d" maybe
    return not next_lower


def _word_before(text: str, end: int) -> str:
    """The token that ends at `end`, without opening quotes or brackets."""
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[start:end].lstrip(_OPENERS)


def _roman_follows(text: str, position: int) -> bool:
    """True when a Roman numeral comes next ("e.ə. V əsr", "до н.э. IV век")."""
    word = text[position:].split(maxsplit=1)[:1]
    return bool(word) and bool(re.fullmatch(r"[IVXLC]+[,.;:]?", word[0]))


def _next_letter(text: str, position: int) -> str | None:
    """The first letter or digit at or after `position`, skipping quotes and dashes."""
    for char in text[position:]:
        if char.isalnum():
            return char
        if char.isspace() or char in _OPENERS:
            continue
        return char
    return None


# ------------------------------------------------------------------ cleaning


def is_chrome(paragraph: str) -> bool:
    """True for a paragraph that is page or feed furniture (views, share, copyright…)."""
    text = paragraph.strip()
    if len(text) > _CHROME_MAX:
        return False
    return bool(_CHROME_MARKS.search(text) or _CHROME_LINES.fullmatch(text))


def is_label(paragraph: str) -> bool:
    """True for a short line that is not a sentence (a menu entry, a signature, a heading)."""
    text = paragraph.strip()
    if len(text) > _LABEL_MAX:
        return False
    return not re.search(r"[.!?…:;]['\"»”’)]*$", text) or len(_WORD.findall(text)) <= 2


def clean_text(text: str, *, title: str = "", author: str | None = None, lang: str = "en") -> str:
    """Normalise whitespace, quotes and dashes; drop furniture, a repeated title, a dateline and
    a byline at the start. Paragraphs stay separated by single newlines."""
    text = normalise_whitespace(text)
    if not text:
        return ""
    paragraphs: list[str] = []
    for paragraph in text.split("\n"):
        paragraph = _tidy(paragraph, lang)
        if paragraph and not is_chrome(paragraph):
            paragraphs.append(paragraph)
    paragraphs = _drop_leading_furniture(paragraphs, title, author)
    return "\n".join(paragraphs)


def _tidy(paragraph: str, lang: str) -> str:
    paragraph = _normalise_quotes(paragraph, lang)
    paragraph = _SPACED_HYPHEN.sub(" — ", paragraph)
    style = "en" if lang == "en" else ""
    paragraph = _SPACE_BEFORE[style].sub(r"\1", paragraph)
    paragraph = _SPACE_AFTER[style].sub(r"\1", paragraph)
    return paragraph.strip()


def _normalise_quotes(text: str, lang: str) -> str:
    """Use one style of double quotes per language: “…” in English, «…» in Russian and
    Azerbaijani (with ‘…’ or „…“ inside); straight apostrophes in words become ’."""
    if not any(q in text for q in _DOUBLE_QUOTES) and "'" not in text:
        return text
    outer, inner = (("“", "”"), ("‘", "’")) if lang == "en" else (("«", "»"), ("„", "“"))
    out: list[str] = []
    openers: list[str] = []  # the quote characters currently open, as written
    for index, char in enumerate(text):
        if char not in _DOUBLE_QUOTES:
            out.append(char)
            continue
        if char == "“" and openers and openers[-1] == "„":
            opening = False  # „…“: the German-style pair used inside Russian quotes
        elif char in "“„‟«":
            opening = True
        elif char in "”»":
            opening = False
        else:
            before = text[index - 1] if index else " "
            after = text[index + 1] if index + 1 < len(text) else " "
            opening = (before.isspace() or before in "([{—–-/«“„") and not (
                openers and (after.isspace() or after in ".,;:!?…)")
            )
        if opening:
            openers.append(char)
            out.append(outer[0] if len(openers) == 1 else inner[0])
        else:
            out.append(outer[1] if len(openers) <= 1 else inner[1])
            if openers:
                openers.pop()
    return _APOSTROPHE.sub("’", "".join(out))


def _fold(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)]


def _drop_leading_furniture(paragraphs: list[str], title: str, author: str | None) -> list[str]:
    title_words = _fold(title)
    author_words = _fold(author or "")
    while paragraphs:
        first = paragraphs[0]
        words = _fold(first)
        if not words or words in (title_words, author_words):
            paragraphs.pop(0)
            continue
        byline = _BYLINE.match(first)
        if byline and byline.end() == len(first):
            paragraphs.pop(0)
            continue
        stripped = _strip_lead(first, title_words)
        if stripped != first:
            if stripped:
                paragraphs[0] = stripped
            else:
                paragraphs.pop(0)
            continue
        break
    return paragraphs


def _strip_lead(paragraph: str, title_words: list[str]) -> str:
    """Remove a repeated title, a dateline or a byline from the start of `paragraph`."""
    if title_words:
        matches = list(_WORD.finditer(paragraph))
        if len(matches) >= len(title_words) and all(
            m.group().casefold() == w for m, w in zip(matches, title_words, strict=False)
        ):
            rest = paragraph[matches[len(title_words) - 1].end() :]
            after = _TRIM_AFTER_TITLE.sub("", rest)
            removed = rest[: len(rest) - len(after)]
            # Only a title followed by a break or a new sentence: "Iran drills began…" keeps
            # its first words.
            new_sentence = bool(after) and (after[0].isupper() or after[0] in "«“‘„")
            if (
                not after
                or re.search(r"[.:;!?…—–|-]", removed)
                or (new_sentence and len(title_words) >= 3)
            ):
                return after
    for pattern in (*_DATELINES, _BYLINE):
        match = pattern.match(paragraph)
        if match and match.end() > 0:
            return paragraph[match.end() :].lstrip(" ,.:;—–-|")
    return paragraph


# ------------------------------------------------------------------ summarisers


def summarise(
    text: str,
    limit: int,
    *,
    mode: str = LEAD,
    title: str = "",
    author: str | None = None,
    lang: str = "en",
) -> str:
    """Summarise `text` in at most `limit` UTF-16 units with the given mode."""
    if mode == EXTRACTIVE:
        return extractive(text, limit, title=title, author=author, lang=lang)
    return lead(text, limit, title=title, author=author, lang=lang)


def lead(
    text: str, limit: int, *, title: str = "", author: str | None = None, lang: str = "en"
) -> str:
    """Return the first whole sentences of `text` that fit in `limit` UTF-16 units.

    Only a first sentence longer than `limit` is cut, at a word boundary with an ellipsis.
    """
    if limit <= 0 or not text:
        return ""
    bound = limit * _PREFIX_FACTOR + _PREFIX_EXTRA
    partial = len(text) > bound
    cleaned = clean_text(text[:bound] if partial else text, title=title, author=author, lang=lang)
    sentences = _sentences(cleaned, lang)
    if partial and len(sentences) > 1:
        sentences.pop()  # may have been cut by the prefix
    return _join_fitting(sentences, range(len(sentences)), limit, stop_at_first_miss=True)


def extractive(
    text: str, limit: int, *, title: str = "", author: str | None = None, lang: str = "en"
) -> str:
    """Return the most central sentences of `text` (LexRank), in their original order, in at
    most `limit` UTF-16 units; falls back to the lead when the text is short."""
    if limit <= 0 or not text:
        return ""
    cleaned = clean_text(text[:_EXTRACTIVE_MAX_CHARS], title=title, author=author, lang=lang)
    sentences = _sentences(cleaned, lang)[:_EXTRACTIVE_MAX_SENTENCES]
    whole = _join_fitting(sentences, range(len(sentences)), limit, stop_at_first_miss=True)
    if len(sentences) <= 2 or utf16_len(whole) >= utf16_len(cleaned):
        return whole
    scores = centrality([s for s, _ in sentences], lang)
    # Fragments ("Yes.", a signature) are poor summaries whatever their score.
    candidates = [i for i, (s, _) in enumerate(sentences) if len(_WORD.findall(s)) >= 5]
    ranked = sorted(candidates or range(len(sentences)), key=lambda i: (-scores[i], i))
    average = 1.0 / len(sentences)
    chosen: list[int] = []
    used = 0
    for index in ranked:
        if chosen and scores[index] < average:
            break  # room is better left empty than filled with an off-topic sentence
        cost = utf16_len(sentences[index][0]) + 1
        if used + cost <= limit + 1:
            chosen.append(index)
            used += cost
    if not chosen:
        return whole
    return _join_fitting(sentences, sorted(chosen), limit, stop_at_first_miss=False)


def _join_fitting(
    sentences: Sequence[tuple[str, bool]],
    indices: Sequence[int] | range,
    limit: int,
    *,
    stop_at_first_miss: bool,
) -> str:
    out = ""
    previous = -2
    for index in indices:
        sentence, starts_paragraph = sentences[index]
        if not out:
            separator = ""
        elif index == previous + 1 and not starts_paragraph:
            separator = " "
        else:
            separator = "\n"
        candidate = out + separator + sentence
        if utf16_len(candidate) > limit:
            if stop_at_first_miss:
                break
            continue
        out = candidate
        previous = index
    if not out and sentences and indices:
        out = cut_at_word(sentences[indices[0]][0], limit)
    return out


def centrality(sentences: Sequence[str], lang: str = "en") -> list[float]:
    """LexRank: stationary distribution of the TF-IDF cosine-similarity graph of `sentences`.

    Terms are the shared analysis's stems (bot.text.analysis), as search and filters see them.
    """
    n = len(sentences)
    if n == 0:
        return []
    bags = [Counter(term(w, lang) for w in _terms(s)) for s in sentences]
    document_frequency: Counter[str] = Counter()
    for bag in bags:
        document_frequency.update(bag.keys())
    idf = {t: math.log((n + 1) / (df + 0.5)) for t, df in document_frequency.items()}
    vectors = [{t: c * idf[t] for t, c in bag.items()} for bag in bags]
    norms = [math.sqrt(sum(v * v for v in vec.values())) or 1.0 for vec in vectors]
    # Row-normalised similarity graph, kept sparse: most sentence pairs share no term.
    rows: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            small, large = sorted((vectors[i], vectors[j]), key=len)
            dot = sum(v * large.get(t, 0.0) for t, v in small.items())
            if dot > 0:
                similarity = dot / (norms[i] * norms[j])
                rows[i].append((j, similarity))
                rows[j].append((i, similarity))
    transitions = []
    for row in rows:
        total = sum(w for _, w in row)
        transitions.append([(j, w / total) for j, w in row] if total else [])
    damping = 0.85
    rank = [1.0 / n] * n
    for _ in range(100):
        # A sentence linked to nothing spreads its rank evenly, as in PageRank.
        dangling = sum(rank[i] for i in range(n) if not transitions[i])
        new = [(1 - damping) / n + damping * dangling / n] * n
        for i, row in enumerate(transitions):
            share = damping * rank[i]
            for j, weight in row:
                new[j] += share * weight
        delta = sum(abs(a - b) for a, b in zip(new, rank, strict=True))
        rank = new
        if delta < 1e-7:
            break
    return rank


def _terms(sentence: str) -> list[str]:
    # The shared analysis's words (folded case), less stopwords; stemmed by the caller.
    return [w for w in words(sentence) if len(w) > 1 and not w.isdigit() and w not in _STOPWORDS]
