"""Benchmarks: the pipeline against a typical solution and a DuckDB SQL lower bound.

``python -m benchmarks`` (or ``make bench``) runs the scenarios and writes
``benchmarks/RESULTS.md``; see ``benchmarks/__main__.py`` for the options. Modules: ``scenarios``
(what runs, the targets), ``datasets`` (generated and split inputs), ``implementations`` and
``harness`` (running and measuring (a), (b), (c)), ``duckdb_sql`` + ``lower_bound.sql`` ((c)),
``reference`` ((b)), ``compare`` (same rows?), ``steps`` ((a)'s time per step from its Dagster
instance), ``pyspy`` + ``profile_pipeline`` (``--profile``), ``report`` (RESULTS.md).
"""
