"""Stored pieces to Telegram: the outbox scheduler, the one sender, rate limits, outcomes."""
