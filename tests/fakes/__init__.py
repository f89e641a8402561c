"""Test doubles shared by the test suite: a fake Bot API, a feed server, an HTML checker."""
