"""Texts, keyboards and the callback codec of the screens the handlers show."""
