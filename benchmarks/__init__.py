"""Benchmarks, run with ``python -m benchmarks`` (``make bench``); never part of the tests.

Each benchmark is a module of this package with ``main(argv: list[str]) -> int`` that prints its
own report. ``benchmarks/__main__.py`` lists them by name; an entry whose module is absent is
skipped, so a benchmark can be listed there before its module lands.
"""
