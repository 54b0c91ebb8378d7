"""hipages_pipeline: website events (JSON Lines) -> hourly-partitioned analytics tables, with Dagster.

The package is laid out by what each module holds:

- ``events/``      the event semantics of the data contract, free of Dagster (reading lines,
                   validation with reason codes, URL and IP rules, the table transformations);
- ``partitions``   the one hourly partitions definition shared by every asset;
- ``resources``    configuration (source glob, output directory, DuckDB warehouse, thresholds);
- ``io_manager``   the DuckDB IO manager: atomic, by-name partition writes of DuckDB queries
                   (table to table) and pandas frames;
- ``assets/``      the software-defined assets, one module per stage;
- ``checks``       the asset checks' specs and their evaluation;
- ``jobs``         jobs (and, later, schedules and sensors);
- ``definitions``  the single entry point that assembles the ``Definitions``;
- ``cli``          the ``hipages-pipeline`` command.
"""

import warnings

from dagster import BetaWarning, PreviewWarning

# The beta/preview APIs used here (single-run backfill policy, code references, partition-mapping
# options) are pinned in constraints.txt; their notices are not for operators of the pipeline.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
