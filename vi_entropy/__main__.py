"""``python -m vi_entropy``: the ``vi-entropy`` command line."""

import sys

from vi_entropy.cli import main

sys.exit(main())
