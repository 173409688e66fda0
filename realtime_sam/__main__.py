"""``python -m realtime_sam``: the same as the ``realtime-sam`` command."""

from __future__ import annotations

from realtime_sam.launcher import main

if __name__ == "__main__":
    main()
