"""hipages_pipeline: website events (JSON Lines) -> hourly-partitioned analytics tables, with Dagster.

- ``lib/``            the data contract and the event semantics, with no Dagster import;
- ``defs/``           the Dagster definitions by stage (ingest, clean, sessions, exports,
                      automation), each with its assets and checks;
- ``definitions.py``  the single entry point that assembles the ``Definitions``;
- ``cli/``            the ``hipages-pipeline`` command: plans, launches and summarizes runs.
"""

import warnings

from dagster import BetaWarning, PreviewWarning

# The beta/preview APIs used here (single-run backfill policy, code references, partition-mapping
# options) are pinned in constraints.txt; their notices are not for operators of the pipeline.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
