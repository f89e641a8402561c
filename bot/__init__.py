"""Caliber.az analytics to Telegram: polling, rendering, delivery and the command line."""
