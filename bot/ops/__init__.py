"""Operator tooling: what an operator runs or watches (`python -m bot check` and `stats`, the
/stats report, metrics), as plain functions over settings, clients and the store."""
