"""Unit tests: one module or function at a time, real SQLite files, no running bot."""
