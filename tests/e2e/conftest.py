"""Fixtures e2e modules share: the readers' running bot and the people talking to it (defined
with the readers' tests, tests/e2e/test_readers_e2e.py)."""

from tests.e2e.test_readers_e2e import bot, people

__all__ = ["bot", "people"]
