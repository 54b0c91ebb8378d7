"""hipages_pipeline: website events (JSON Lines) -> hourly-partitioned analytics tables, with Dagster.

The package is laid out by what each module holds:

- ``events/``      the event semantics of the data contract, free of Dagster (reading lines,
                   validation with reason codes, URL and IP rules, the table transformations);
- ``partitions``   the one hourly partitions definition shared by every asset;
- ``resources``    configuration (source glob, output directory, quality thresholds);
- ``io_manager``   the DuckDB IO manager with atomic, by-name partition writes;
- ``assets/``      the software-defined assets, one module per stage;
- ``checks``       the asset checks' specs and their evaluation;
- ``jobs``         jobs (and, later, schedules and sensors);
- ``definitions``  the single entry point that assembles the ``Definitions``;
- ``cli``          the ``hipages-pipeline`` command.
"""
