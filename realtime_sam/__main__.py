"""``python -m realtime_sam``: the same as the ``realtime-sam`` command."""

from __future__ import annotations

import sys

from realtime_sam.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
