"""The library: the data contract and the event semantics, with no Dagster import.

- ``contract``   every table declared once (columns, types, grain, partition, CSV layout)
- ``events/``    reading lines, validation rules with reason codes, URL and IP rules
- ``sql/``       the contract's tables as DuckDB SQL: scanning source files, cleaning, sessions
- ``storage/``   CSV files (atomic writes, DuckDB ``COPY``)
- ``generator``  synthetic events in the sample's format (benchmarks, tests)
"""
