"""Feeds to stored pieces: fetching under guards, parsing, polling, article pages, site edits."""
