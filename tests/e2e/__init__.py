"""End-to-end tests: the real bot in this process against the test Bot API and feed servers
over HTTP on 127.0.0.1; timing on the virtual clock."""
