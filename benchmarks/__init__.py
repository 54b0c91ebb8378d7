"""Benchmarks: the pipeline against a typical solution and a DuckDB SQL lower bound.

``python -m benchmarks`` (or ``make bench``) runs them; see ``benchmarks/__main__.py`` and the
results in ``benchmarks/RESULTS.md``.
"""
