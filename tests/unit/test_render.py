"""Rendering: any feed text becomes valid Telegram HTML within Telegram's limits."""

from __future__ import annotations

import html

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.text.i18n import Translator
from bot.text.plain import html_to_text, truncate, utf16_len
from bot.text.render import CAPTION_LIMIT, TEXT_LIMIT, Renderer, hashtag, hashtags
from storage.models import ChatSettings, PostStyle
from tests.factories import item
from tests.fakes.telegram_html import check_html

RENDERER = Renderer(Translator(), "Asia/Baku", 600)
# Text that stresses escaping and UTF-16 counting: markup, entities, emoji, RTL, combining marks.
_PIECES = [*"<>&\"'/;#_ abcXYZ\n\tİıəğşçöüЁёЖ", "😀", "👍🏽", "\u0301", "&amp;", "<b>", "</i>",
           "\u202e", "\x00", "&#x1F600;", "word "]  # fmt: skip
nasty_text = st.lists(st.sampled_from(_PIECES), max_size=1500).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=nasty_text,
    summary=nasty_text,
    categories=st.lists(nasty_text, max_size=8),
    author=st.none() | nasty_text,
    signature=st.none() | nasty_text,
    photo=st.booleans(),
    lang=st.sampled_from(["en", "ru", "az"]),
)
def test_any_post_is_valid_telegram_html_within_limits(
    title: str,
    summary: str,
    categories: list[str],
    author: str | None,
    signature: str | None,
    photo: bool,
    lang: str,
) -> None:
    piece = item(
        title=title,
        summary=summary,
        categories=tuple(categories),
        author=author,
        image_url="https://caliber.az/i.jpg" if photo else None,
        link='https://caliber.az/en/post/1?a=1&b="2"<x>',
    )
    style = PostStyle.PHOTO if photo else PostStyle.PREVIEW
    post = RENDERER.post(piece, ChatSettings(style=style, signature=signature), lang=lang)
    plain = check_html(post.html)  # raises like Telegram would
    limit = CAPTION_LIMIT if photo else TEXT_LIMIT
    assert utf16_len(plain) <= limit
    assert f'href="{html.escape(post.link)}"' in post.html


def test_post_layout_and_language() -> None:
    piece = item(
        title="Iran & Russia: <cracks>",
        summary="<p>First sentence.</p><script>alert(1)</script><p>Second &amp; last.</p>",
        categories=("Analytics", "South Caucasus"),
    )
    piece = item(
        title=piece.title, summary=html_to_text(piece.summary), categories=piece.categories
    )
    post = RENDERER.post(piece, lang="ru")
    assert post.html.startswith(
        '<b><a href="https://caliber.az/en/post/1">Iran &amp; Russia: &lt;cracks&gt;</a></b>'
    )
    assert "alert" not in post.html
    assert "First sentence.\nSecond &amp; last." in post.html
    assert '<a href="https://caliber.az/en/post/1">Читать далее</a>' in post.html
    assert "#Analytics #SouthCaucasus" in post.html
    assert "января 2026" in post.text  # the date in Russian, in Baku time
    assert not post.disable_preview and post.photo_url is None


def test_text_style_disables_preview_and_hashtags_off() -> None:
    piece = item(categories=("Politics",))
    post = RENDERER.post(piece, ChatSettings(style=PostStyle.TEXT, hashtags=False))
    assert post.disable_preview and "#Politics" not in post.html


def test_summary_equal_to_title_is_dropped() -> None:
    post = RENDERER.post(item(title="Same words here", summary="Same words here."))
    assert post.text.count("Same words here") == 1


def test_long_summary_cut_at_sentence_or_word() -> None:
    summary = "This is a sentence. " * 100
    post = RENDERER.post(item(summary=summary.strip()))
    body = post.text.split("\n\n")[1]
    assert body.endswith(".") and utf16_len(body) <= 600


def test_truncate_boundaries() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("one two three four", 12) == "one two…"
    assert truncate("First one. Second one is long.", 15) == "First one."
    assert utf16_len(truncate("😀" * 10, 5)) <= 5


def test_hashtags_are_letters_digits_underscores() -> None:
    assert hashtag("Analytics") == "#Analytics"
    assert hashtag("Аналитика") == "#Аналитика"
    assert hashtag("south caucasus") == "#SouthCaucasus"
    assert hashtag("C++ & AI/ML") == "#CAIML"
    assert hashtag("2025") is None
    assert hashtags(("a", "A", "b", "c", "d", "e", "f")) == ["#A", "#B", "#C", "#D", "#E"]


def test_message_escapes_values() -> None:
    html = RENDERER.message("en", "{channel} is disconnected: I will not post there any more.",
                            channel="<b>x</b>")  # fmt: skip
    assert html.startswith("&lt;b&gt;x&lt;/b&gt; is disconnected")
    check_html(html)
