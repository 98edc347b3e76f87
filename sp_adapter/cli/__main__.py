"""``python -m sp_adapter.cli``: the ``sp-adapter`` command (torchrun runs it this way)."""

import sys

from sp_adapter.cli import main

sys.exit(main())
