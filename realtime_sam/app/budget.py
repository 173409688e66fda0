"""The shared encoder's frame budget: cap live streams' processed frame rate while the encoder is behind.

With K streams on one model, each stream's encode age is about K times one
encode (the encoder serves the stalest stream first, one encode each in
turn), so it stays within K times its age alone as long as one encode takes
as long as it does with one stream. On a CPU it does not: K inference
threads, each running optical flow on every frame, take the cores the
encoder needs, and every encode gets slower (measured on two cores at K = 8:
1.6 s alone, 2.7 s beside eight streams at 24 fps). A stream alone does a
source's worth of frames beside its encodes; the rule here is that K
streams together do no more than that while the encoder is behind:

* **budget**: each live stream's processed rate is capped at
  ``frame_budget x its source's fps / K`` (K: live streams running), and
  never below ``min_fps``. The pipeline takes the newest frame when the
  cap allows the next one and drops the rest, as it does for any live
  source the model cannot keep up with (:meth:`~realtime_sam.app.pipeline.Pipeline.pace_with`);
* **behind**: the encoder is behind when it works without rest (its
  duty, the share of time it is busy, smoothed over its recent calls with
  weight ``streams.duty_smoothing`` on the newest, is at least
  ``streams.engage_duty``, 0.9 by default) for more than one stream, and
  another stream's request is already waiting when a call ends. It keeps up
  again when only one stream has used it in its last
  :attr:`FrameBudget.RECENT_CALLS` calls, or when it would have time to
  spare without the cap: its duty, scaled by how much faster the streams
  would go uncapped (they ask for encodes every so many processed frames),
  below ``streams.lift_duty`` (0.6 by default). The cap is then lifted.
  (Judging by the duty under the cap alone, the cap would be lifted as soon
  as it worked, and come back with the next encodes.)

One stream alone is never capped (nobody else waits for the encoder), nor
are streams on an encoder that keeps up, nor files read as fast as the model
goes (nothing to drop: capping them would only slow the job down). A GPU
encoding every frame (the gpu preset) is always busy, so it counts as behind
even when the streams keep up: that preset turns the budget off (measured
on an H200 with four streams: 26.5 fps each uncapped, 6.9 capped).

This module starts no thread: the :class:`~realtime_sam.app.scheduler.EncodeScheduler`
reports each encoder call (:meth:`FrameBudget.observe`) and each stream's
inference thread asks :meth:`FrameBudget.interval_s` before it takes a frame.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

from realtime_sam.config_types import check_numbers
from realtime_sam.errors import ConfigError

__all__ = ["EncoderCall", "FrameBudget", "StreamsConfig"]


@dataclass(frozen=True)
class StreamsConfig:
    """Several streams in one process: the shared encoder's frame budget (config section ``streams``).

    Attributes:
        frame_budget: while the shared encoder is behind, the live streams together process at most
            this many times one stream's frame rate: each is capped at ``frame_budget x source fps / K``.
            1.0 = what one stream alone does; 0 = no cap (every stream processes what it can).
        min_fps: the cap never goes below this many processed frames per second per stream.
        engage_duty: the encoder is behind (and the cap engages) when its smoothed duty, the share of
            time it is busy, is at least this while another stream's request waits; in (0, 1].
        lift_duty: the cap is lifted when the duty the encoder would have uncapped falls below this;
            in (0, engage_duty): the gap between the two is a dead band that keeps the cap from flapping.
        duty_smoothing: weight of the newest encoder call in the duty's moving average, in (0, 1];
            1 = the last call alone (the cap follows every call), smaller = steadier and slower to react.
    """

    frame_budget: float = 1.0
    min_fps: float = 4.0
    engage_duty: float = 0.9
    lift_duty: float = 0.6
    duty_smoothing: float = 0.5

    def __post_init__(self) -> None:
        check_numbers(self, "streams")  # by type first: "5" < 1 is a TypeError naming no key
        if not self.frame_budget >= 0:
            raise ConfigError(f"streams.frame_budget must be >= 0 (0 = no cap), got {self.frame_budget}")
        if not self.min_fps > 0:
            raise ConfigError(f"streams.min_fps must be > 0 (frames per second), got {self.min_fps}")
        # `not 0 < x <= 1` rather than `x <= 0 or x > 1`: NaN fails it too.
        if not 0 < self.engage_duty <= 1:
            raise ConfigError(
                f"streams.engage_duty must be > 0 and <= 1 (a share of the encoder's time), got {self.engage_duty}"
            )
        if not 0 < self.lift_duty < self.engage_duty:
            raise ConfigError(
                f"streams.lift_duty must be > 0 and below streams.engage_duty ({self.engage_duty}), got"
                f" {self.lift_duty}: lower lift_duty or raise engage_duty"
            )
        if not 0 < self.duty_smoothing <= 1:
            raise ConfigError(
                f"streams.duty_smoothing must be > 0 and <= 1 (weight of the newest encoder call), got"
                f" {self.duty_smoothing}"
            )


@dataclass(frozen=True)
class EncoderCall:
    """One call of the shared encoder, as :class:`~realtime_sam.app.scheduler.EncodeScheduler` reports it.

    Attributes:
        start, end: monotonic seconds when the call began and ended.
        keys: the streams whose images it encoded.
        waiting: the other streams whose requests were waiting when it ended.
    """

    start: float
    end: float
    keys: tuple[str, ...]
    waiting: tuple[str, ...]


@dataclass(frozen=True)
class _Stream:
    live: bool
    fps: float  # nominal frames per second


class FrameBudget:
    """Decides each stream's processed-frame cap from the shared encoder's calls (thread-safe).

    Args:
        config: the run's :class:`StreamsConfig`.
    """

    RECENT_CALLS = 3
    """Calls looked back on to tell whether more than one stream uses the encoder."""
    DEFAULT_FPS = 30.0
    """A live source's frame rate when it does not say."""

    def __init__(self, config: StreamsConfig = StreamsConfig()) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._duty = 0.0
        self._samples = 0
        self._last_end: float | None = None
        self._recent: collections.deque[frozenset[str]] = collections.deque(maxlen=self.RECENT_CALLS)
        self._behind = False

    def configure(self, config: StreamsConfig) -> None:
        """Use ``config`` from now on (a Ray actor learns the run's settings with its first stream)."""
        with self._lock:
            self.config = config

    # -- streams -------------------------------------------------------------------------------

    def add(self, key: str, *, live: bool, fps: float | None = None) -> None:
        """Count stream ``key`` (``live``: a camera, a network stream or a paced file; ``fps``: its nominal rate)."""
        rate = float(fps) if fps and fps > 0 else self.DEFAULT_FPS
        with self._lock:
            self._streams[key] = _Stream(bool(live), rate)

    def end(self, key: str) -> None:
        """Stream ``key`` has ended: the others share the budget."""
        with self._lock:
            self._streams.pop(key, None)

    # -- the encoder ---------------------------------------------------------------------------

    def observe(self, call: EncoderCall) -> None:
        """Take one encoder call into account (the scheduler calls this after each)."""
        with self._lock:
            self._recent.append(frozenset(call.keys) | frozenset(call.waiting))
            last_end, self._last_end = self._last_end, call.end
            if last_end is None:
                return  # the idle time before the first call means nothing (the streams were opening)
            busy = max(0.0, call.end - call.start)
            idle = max(0.0, call.start - last_end)
            sample = busy / (busy + idle) if busy + idle > 0 else 1.0
            a = 1.0 if self._samples == 0 else self.config.duty_smoothing
            self._duty = a * sample + (1 - a) * self._duty
            self._samples += 1
            shared = len(frozenset().union(*self._recent)) >= 2
            if not self._behind:
                self._behind = shared and bool(call.waiting) and self._duty >= self.config.engage_duty
            elif not shared or min(1.0, self._duty * self._speedup()) < self.config.lift_duty:
                self._behind = False

    @property
    def behind(self) -> bool:
        """True while the encoder is behind (whether or not a stream is capped)."""
        with self._lock:
            return self._behind

    @property
    def duty(self) -> float:
        """The encoder's smoothed duty, 0..1."""
        with self._lock:
            return self._duty

    # -- the cap -------------------------------------------------------------------------------

    def cap_fps(self, key: str) -> float | None:
        """Stream ``key``'s processed-frame cap in frames per second now; ``None`` = not capped."""
        with self._lock:
            return self._cap(key)

    def interval_s(self, key: str) -> float:
        """The least time between the starts of two processed frames of ``key`` (0 = no cap)."""
        with self._lock:
            cap = self._cap(key)
        return 0.0 if cap is None else 1.0 / cap

    def _cap(self, key: str) -> float | None:
        s = self._streams.get(key)
        if s is None or not self._behind:
            return None
        return self._budgeted(s)

    def _budgeted(self, s: _Stream) -> float | None:
        """``s``'s cap while the encoder is behind (``None``: none)."""
        if not s.live or self.config.frame_budget <= 0:
            return None
        k = sum(1 for x in self._streams.values() if x.live)
        if k < 2:
            return None  # one stream alone: as it always was
        cap = max(self.config.min_fps, self.config.frame_budget * s.fps / k)
        return None if cap >= s.fps else cap

    def _speedup(self) -> float:
        """How many times faster than now the capped streams would process frames uncapped (1: none capped)."""
        caps = [(s.fps, self._budgeted(s)) for s in self._streams.values()]
        return max([fps / cap for fps, cap in caps if cap], default=1.0)
