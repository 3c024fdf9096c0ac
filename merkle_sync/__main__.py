"""``python -m merkle_sync``: the ``merkle-sync`` command."""

import sys

from merkle_sync.cli import main

sys.exit(main())
