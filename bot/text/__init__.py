"""Text: the one analyser (folding, stemming), summaries, rendering to Telegram HTML, i18n."""
