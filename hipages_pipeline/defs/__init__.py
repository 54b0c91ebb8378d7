"""The Dagster definitions, by stage; ``hipages_pipeline.definitions`` loads them all (``load_defs``).

- ``land/``        source files -> ``landed_lines``, ``landed_files`` (one partition per file)
- ``ingest/``      landed lines -> ``raw_events``, ``rejected_events`` (hourly), ``rejected_without_hour``
- ``clean/``       ``raw_events`` -> ``cleaned_events``, ``duplicate_events`` -> ``hourly_activity``
- ``sessions/``    ``cleaned_events`` (24 h either side) -> ``user_sessions``
- ``exports/``     the per-hour CSV files and the whole-table CSV files
- ``automation/``  the jobs, the hourly schedule and the sensors (landing files, landed hours,
                   sessions refresh, stale runs)

Each stage holds its assets (``assets.py``) and their checks (``checks.py``). Shared here:
``common`` (group, owners, contract tables as Dagster metadata), ``partitions``, ``resources``
(configuration) and ``io_manager`` (DuckDB storage).
"""
