"""Process tests: `python -m bot` as its own process (kill -9, SIGTERM, the instance lock,
the command line). Real time, asserting upper bounds only."""
