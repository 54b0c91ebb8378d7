"""The Dagster definitions, by stage; ``hipages_pipeline.definitions`` loads them all (``load_defs``).

- ``ingest/``      source files -> ``raw_events``, ``rejected_events``, ``rejected_without_hour``
- ``clean/``       ``raw_events`` -> ``cleaned_events``, ``duplicate_events`` -> ``hourly_activity``
- ``sessions/``    ``cleaned_events`` (24 h either side) -> ``user_sessions``
- ``exports/``     the per-hour CSV files and the whole-table CSV files
- ``automation/``  the job, the hourly schedule and the landing-files sensor

Each stage holds its assets (``assets.py``) and their checks (``checks.py``). Shared here:
``common`` (group, owners, contract tables as Dagster metadata), ``partitions``, ``resources``
(configuration) and ``io_manager`` (DuckDB storage).
"""
