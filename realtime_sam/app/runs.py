"""The streaming APIs' runs before their first result: :func:`realtime_sam.track` and ``track_many`` share this.

A generator function's body runs at the first ``next()``. A run closed (or
dropped) before then never ran its body, so nothing closed the sinks given to
it: the video made by ``make_sink`` stayed an open 0-byte file ("moov atom not
found") and the masks file an empty one. And a script's global run never
iterated was not always reached when the interpreter finalized (the video was
removed, the masks file stayed, empty). :func:`primed_run` answers both: the
run is advanced to a first step that opens nothing, where closing it discards
the sinks, and kept to be closed at exit (a run already going finalises its
outputs then, as :func:`realtime_sam.app.pipeline.close_open_pipelines` does
for its pipeline).
"""

from __future__ import annotations

import atexit
import weakref
from typing import Any, Iterator, Sequence, TypeVar

from realtime_sam.output.sink_base import discard_sinks

__all__ = ["primed_run"]

T = TypeVar("T")

# The runs primed_run returned that are not finished, to close at exit.
_runs: "weakref.WeakSet[Iterator[Any]]" = weakref.WeakSet()


@atexit.register
def _close_runs() -> None:
    for run in list(_runs):
        try:
            run.close()  # type: ignore[attr-defined]
        except Exception:  # one running on a thread still going ("generator already executing")
            pass


def primed_run(body: Iterator[T], sinks: Sequence[Any]) -> Iterator[T]:
    """``body``'s results, from a generator already at a first step that opens nothing.

    Args:
        body: the run, a generator not yet started (its function called, not iterated).
        sinks: every sink given to the run: discarded (closed, and what making them
            created removed: :func:`~realtime_sam.output.sink_base.discard_sinks`)
            if the run is closed, dropped or left to the exit before its first result.
    """

    def run() -> Iterator[T]:
        try:
            yield None  # type: ignore[misc]
        except GeneratorExit:
            discard_sinks(sinks)
            raise
        yield from body

    primed = run()
    next(primed)
    _runs.add(primed)
    return primed
