"""``python -m hipages_pipeline.cli``: the same as the ``hipages-pipeline`` command."""

import sys

from hipages_pipeline.cli import main

sys.exit(main())
