"""Translations: complete catalogs, correct plurals, and no UI text outside them.

1. Every catalog file (bot/locales/<lang>/LC_MESSAGES/<feature>.po) exists in every language of
   bot.text.i18n.LANGUAGES, with the same msgids, each with a non-empty translation (every plural
   form too), and translations use only the placeholders their msgid offers.
2. Plural entries have as many forms as the language's Plural-Forms header says; Russian has 3.
3. Every string literal given to N_(), gettext(), ngettext(), renderer.message() or
   renderer.plural() in bot/ and handlers/ is a msgid of the catalogs (read with ast).
4. Handlers hold no literal UI string. The rule (checked with ast over handlers/*.py):
   a. the text of anything sent to Telegram — the text/caption argument of reply_text,
      reply_html, send_message, send_photo, edit_message_text, edit_message_caption, answer,
      answer_callback_query, and the label of an InlineKeyboardButton — is never a string
      literal or an f-string: it must come from a catalog;
   b. any other string literal that reads as text for people (two words or more, or a letter
      outside ASCII) is allowed only as a docstring, a msgid inside N_(), a log message, an
      exception message, or the right side of a comparison; anything else must be listed in
      ALLOWED_LITERALS below with the reason it never reaches a reader untranslated.
   Short code-like strings (callback data prefixes such as "lang:", regex patterns, parse
   modes, dictionary keys) are single ASCII tokens and pass.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.pofile import read_po

from bot.text.i18n import LANGUAGES, LOCALES_DIR, Translator

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = (ROOT / "bot", ROOT / "handlers")

# (file name in handlers/, literal) -> why it is not UI text.
ALLOWED_LITERALS = {
    ("membership.py", "by user "): "the detail of an event row, for operators' logs",
}

_TELEGRAM_TEXT_CALLS = {
    "reply_text": ("text", 0),
    "reply_html": ("text", 0),
    "send_message": ("text", 1),
    "edit_message_text": ("text", 0),
    "edit_message_caption": ("caption", 0),
    "answer_callback_query": ("text", 1),
    "answer": ("text", 0),
    "send_photo": ("caption", None),
    "InlineKeyboardButton": ("text", 0),
}
_TRANSLATING_CALLS = {
    "N_": (0,),
    "gettext": (1,),
    "ngettext": (1, 2),
    "message": (1,),
    "plural": (1, 2),
}
_LOG_OBJECTS = {"log", "logger", "logging", "_log", "LOG"}


def catalog_files() -> dict[str, dict[str, Path]]:
    """{feature file name: {language: path}} over every language directory."""
    files: dict[str, dict[str, Path]] = {}
    for path in sorted(LOCALES_DIR.glob("*/LC_MESSAGES/*.po")):
        files.setdefault(path.name, {})[path.parts[-3]] = path
    return files


def read(path: Path, lang: str) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle, locale=lang)


def entries(catalog: Catalog) -> dict[str, Message]:
    return {_msgid(m): m for m in catalog if m.id}


def _msgid(message: Message) -> str:
    return message.id[0] if isinstance(message.id, tuple) else message.id


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_locales_are_the_configured_languages() -> None:
    present = {p.name for p in LOCALES_DIR.iterdir() if p.is_dir()}
    assert set(LANGUAGES) <= present
    assert {"en", "ru", "az"} <= set(LANGUAGES)


@pytest.mark.parametrize("feature", sorted(catalog_files()))
def test_catalog_is_complete_in_every_language(feature: str) -> None:
    by_lang = catalog_files()[feature]
    assert set(by_lang) >= set(LANGUAGES), (
        f"{feature} is missing for {set(LANGUAGES) - set(by_lang)}"
    )
    reference = entries(read(by_lang["en"], "en"))
    problems = []
    for lang in LANGUAGES:
        found = entries(read(by_lang[lang], lang))
        if set(found) != set(reference):
            missing, extra = set(reference) - set(found), set(found) - set(reference)
            problems.append(f"{lang}: missing {sorted(missing)}, extra {sorted(extra)}")
        for msgid, message in found.items():
            forms = message.string if isinstance(message.string, tuple) else (message.string,)
            if not all(form and form.strip() for form in forms):
                problems.append(f"{lang}: no translation for {msgid!r}")
            offered = _placeholders(msgid) | {"n"}
            if isinstance(message.id, tuple):
                offered |= _placeholders(message.id[1])
            for form in forms:
                unknown = _placeholders(form or "") - offered
                if unknown:
                    problems.append(f"{lang}: {msgid!r} uses unknown {sorted(unknown)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("feature", sorted(catalog_files()))
def test_plural_forms(feature: str) -> None:
    for lang, path in catalog_files()[feature].items():
        catalog = read(path, lang)
        header = catalog.plural_forms
        match = re.search(r"nplurals\s*=\s*(\d+)", header)
        assert match, f"{path}: no Plural-Forms header"
        nplurals = int(match.group(1))
        if lang == "ru":
            assert nplurals == 3, f"{path}: Russian has three plural forms"
        for message in catalog:
            if message.id and isinstance(message.id, tuple):
                assert isinstance(message.string, tuple)
                assert len(message.string) == nplurals, f"{path}: {message.id[0]!r}"


def test_russian_plurals_pick_the_right_form() -> None:
    translator = Translator()
    one, many = "🔎 Found {n} piece for {query}", "🔎 Found {n} pieces for {query}"
    forms = [translator.ngettext("ru", one, many, n, query="x") for n in (1, 2, 5, 11, 21, 22, 25)]
    assert [f.split()[1] for f in forms] == [
        "Найден", "Найдено", "Найдено", "Найдено", "Найден", "Найдено", "Найдено",
    ]  # fmt: skip
    assert [f.split()[3] for f in forms] == [
        "материал", "материала", "материалов", "материалов", "материал", "материала",
        "материалов",
    ]  # fmt: skip


def _source_files() -> Iterator[Path]:
    for directory in SOURCE_DIRS:
        yield from sorted(directory.rglob("*.py"))


def _call_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def test_every_marked_string_is_in_the_catalogs() -> None:
    known: set[str] = set()
    for paths in catalog_files().values():
        known |= set(entries(read(paths["en"], "en")))
        for message in read(paths["en"], "en"):
            if message.id and isinstance(message.id, tuple):
                known.add(message.id[1])
    missing = []
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            positions = _TRANSLATING_CALLS.get(_call_name(node) or "")
            if positions is None:
                continue
            if _call_name(node) == "N_" and not isinstance(node.func, ast.Name):
                continue
            for position in positions:
                if position >= len(node.args):
                    continue
                arg = node.args[position]
                where = f"{path.relative_to(ROOT)}:{arg.lineno}"
                if isinstance(arg, ast.JoinedStr):
                    missing.append(f"{where}: an f-string cannot be a msgid")
                elif (
                    isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)
                    and arg.value not in known
                ):
                    missing.append(f"{where}: {arg.value!r}")
    assert not missing, "not in any catalog:\n" + "\n".join(missing)


def _reads_as_text(value: str) -> bool:
    # Two words (letters on both sides of a space), or any letter outside ASCII.
    return bool(re.search(r"[^\W\d_]\s+[^\W\d_]", value)) or any(
        ch.isalpha() and not ch.isascii() for ch in value
    )


def _exempt_nodes(tree: ast.AST) -> set[int]:
    """Ids of string nodes that may hold text: docstrings, msgids, log and error messages."""
    exempt: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            exempt.add(id(body[0].value))
        inside: list[ast.AST] = []
        if isinstance(node, ast.Call):
            func = node.func
            msgid = isinstance(func, ast.Name) and func.id == "N_"
            logged = (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id in _LOG_OBJECTS
            )
            if msgid or logged:
                inside = list(node.args)
        elif isinstance(node, ast.Raise) and node.exc is not None:
            inside = [node.exc]
        elif isinstance(node, ast.Assert) and node.msg is not None:
            inside = [node.msg]
        elif isinstance(node, ast.Compare):
            inside = [node.left, *node.comparators]
        for part in inside:
            exempt |= {id(n) for n in ast.walk(part)}
    return exempt


def ui_text_problems(source: str, name: str) -> list[str]:
    """Return where the handler module `source` (file `name`) breaks the rule of the docstring."""
    problems = []
    tree = ast.parse(source)
    exempt = _exempt_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (call := _call_name(node)) in _TELEGRAM_TEXT_CALLS:
            keyword, position = _TELEGRAM_TEXT_CALLS[call]
            args = [k.value for k in node.keywords if k.arg == keyword]
            if position is not None and len(node.args) > position:
                args.append(node.args[position])
            for arg in args:
                if isinstance(arg, ast.JoinedStr) or (
                    isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                ):
                    problems.append(f"{name}:{arg.lineno}: literal text sent by {call}()")
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in exempt
            and _reads_as_text(node.value)
            and (name, node.value) not in ALLOWED_LITERALS
        ):
            problems.append(f"{name}:{node.lineno}: UI text outside a catalog: {node.value!r}")
    return problems


def test_handlers_hold_no_literal_ui_text() -> None:
    problems = []
    for path in sorted((ROOT / "handlers").glob("*.py")):
        problems += ui_text_problems(path.read_text(encoding="utf-8"), path.name)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "body",
    [
        'await update.message.reply_text("Hello")',
        'await query.answer(text="Done")',
        'await query.answer(f"{n}")',
        'await context.bot.send_message(chat_id, "Hi")',
        'InlineKeyboardButton("Back", callback_data="b")',
        'reason = "the bot was removed"',
        'label = "Назад"',
    ],
)
def test_the_rule_refuses_literal_text(body: str) -> None:
    assert ui_text_problems(
        f"async def h(update, context, query, chat_id, n):\n    {body}\n", "x.py"
    )


@pytest.mark.parametrize(
    "body",
    [
        '"""Say hello to the reader."""',
        'log.info("sent %d messages", 1)',
        'raise ValueError("bad callback data")',
        'GREETING = N_("Hello there")',
        'if "not modified" in error.message: pass',
        "await query.answer(plain(lang, STALE))",
        'InlineKeyboardButton(label, callback_data="lang:ru")',
        'pattern = r"^lang:([a-z]{2})$"',
    ],
)
def test_the_rule_accepts_code_and_catalog_text(body: str) -> None:
    source = f"async def h(update, context, query, lang, label, error):\n    {body}\n"
    assert ui_text_problems(source, "x.py") == []
