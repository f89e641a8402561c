"""Persistence: the SQLite schema, its migrations and every query the bot makes."""
