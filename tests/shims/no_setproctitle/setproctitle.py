"""Stands in for the optional setproctitle package, as if it were not installed."""
raise ImportError("setproctitle hidden by the tests")
