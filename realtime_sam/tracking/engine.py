"""The per-frame tracking engine: encode every N frames, propagate, decode, associate.

One call of :meth:`Engine.process` turns a :class:`Frame` into a
:class:`FrameResult`. The engine knows nothing of threads; user commands
(add / remove / clear / auto) may come from any thread and are queued, then
applied at the start of the next ``process`` call.

Per frame::

    commands -> motion predict -> optical-flow propagation of every mask
         (dense flow warps each track's low-res logits, tracks in front hiding
         those behind; sparse flow where dense flow is fooled)
      -> [re-encode due?] encode image, decode all tracks in one batched call
         (box prompt from the propagated mask, its propagated logits as mask
         prompt), decode new user prompts, discovery grid in auto mode
      -> association + lifecycle (Tracker; lost tracks are looked for where
         they went and taken back on appearance) -> who is in front
      -> FrameResult

With ``background_encode`` (and a worker lent by the
:class:`~realtime_sam.app.pipeline.Pipeline`), the periodic re-encode and the
encode for new prompts run on the worker instead, while frames keep flowing
on optical flow alone. The worker decodes too, right after the embedding:
every track (and every new prompt, and the lost tracks' searches) as it
stood on the encoded frame (a :class:`_DecodeRequest`, fixed when the encode
starts), so a landing costs the frame loop no decoder call. When it lands,
every mask (a track's, a new object's, a lost track's found again) is replayed
by flow through the small grey copies of the frames since, which the engine
keeps while an encode is in flight (a track whose frames are gone moves by its
own motion since). Where that replay and the move the track (or a new
object's first look) made since disagree, the one whose pixels look more like
the decoded object is taken: a replay over a few grey copies can lose a fast
object. A track's mask so moved, as one piece, still has the object's shape
of the encoded frame; laid over this frame, the encoded frame gives dense
flow that brings the shape up to date
(:class:`~realtime_sam.tracking.reshape.Reshaper`), kept where it looks no
less like the decoded object. Then they are associated as usual, except
that a track's mask decoded where its prompt was is its own wherever the
track has drifted to since
(:attr:`~realtime_sam.tracking.tracks.Detection.matched_then`).
Discovery still encodes at once, on the current frame. Until a new object's
encode lands, the object is shown by a first look at it
(:mod:`~realtime_sam.tracking.first_look`: its box's region segmented by
its colours), moved by flow like the tracks and replaced by the decoded mask;
so is a lost object seen coming back through the edge it left by (the band
along that edge is searched by its colours every few frames), until an
encode finds it.

The engine is model-agnostic and imports no torch: it talks to a
:class:`~realtime_sam.tracking.model_runner.ModelRunner` (implementations in
:mod:`realtime_sam.model.runners`, loading in :mod:`realtime_sam.model.loader`); the
background jobs and kept frames are :class:`~realtime_sam.tracking.background.BackgroundEncodes`.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, fields
from dataclasses import replace as dataclass_replace
from typing import TYPE_CHECKING, Any, Callable, Hashable, Mapping, NamedTuple, Sequence

import cv2
import numpy as np

from realtime_sam.cpus import usable_cpu_count
from realtime_sam.config_types import check_numbers
from realtime_sam.errors import ConfigError, PromptError, describe_error
from realtime_sam.tracking.association import (
    box_area,
    box_edges,
    box_iou_matrix,
    box_motion,
    mask_to_box,
    track_under,
)
from realtime_sam.tracking.appearance import search_boxes, similarity
from realtime_sam.tracking.background import BackgroundEncodes, _BackgroundJob, wait_for
from realtime_sam.tracking.dense_flow import (
    Deferred,
    DenseFlowPropagator,
    FlowCache,
    logits_to_mask,
    move_logits,
    warp_logits,
)
from realtime_sam.tracking.detection import DetectConfig, Detector, DetectorPrompts, name_tracks, yield_to_prompts
from realtime_sam.tracking.discovery import (
    DiscoveryConfig,
    filter_candidates,
    point_grid,
    stability_score,
)
from realtime_sam.tracking.first_look import first_look
from realtime_sam.tracking.model_runner import ModelRunner
from realtime_sam.tracking.prompts import clamp_prompt, short_repr, validate_prompt
from realtime_sam.tracking.propagation import (
    MaskPropagator,
    PropagationConfig,
    WorkFrame,
)
from realtime_sam.tracking.reshape import Reshaper
from realtime_sam.tracking.tracks import (
    Detection,
    IdCounter,
    Tracker,
    TrackerConfig,
    TrackPrompt,
    appearance_of,
    plausible_mask,
)
from realtime_sam.tracking.two_way import SoftMasks, TwoWay, shown_as
from realtime_sam.types import BoxDetections, Frame, FrameResult, ObjectPrompt, TrackResult, TrackState

if TYPE_CHECKING:
    from pathlib import Path

    from realtime_sam.config import Config

# ModelRunner lives in the torch-free model_runner module; re-exported here, its historic home.
__all__ = ["EngineConfig", "Engine", "ModelRunner"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """How often to run the image encoder and how to prompt the decoder.

    Attributes:
        reencode_every: run the image encoder every N processed frames (1 = every frame);
            in between, masks follow the motion by optical flow. New prompts encode at once
            (on the worker with ``background_encode``).
        mask_prompt: feed each track's last low-res logits back as the decoder's mask prompt.
        multimask_single_point: a lone click decodes SAM's three candidate masks and keeps the best.
        decode_batch: most prompts per decoder call (bounds memory on many tracks / discovery).
        auto: start with auto-discovery on (point grid every ``discovery.every_k_frames``).
        max_tracks: refuse new objects beyond this many live tracks.
        background_encode: run the encoder on a background worker (when a
            :class:`~realtime_sam.app.pipeline.Pipeline` runs the engine), for the
            periodic re-encodes and for new prompts, while masks keep following
            the motion by optical flow; a finished encode's masks are moved to
            the current frame by replaying flow through the frames since. Frames
            then never wait for the encoder: the way to live speed on a CPU,
            where one encode takes seconds (a new object appears when its
            encode lands, already where it is now). Needs a runner with ``embed``
            and ``use`` (:class:`~realtime_sam.tracking.model_runner.ModelRunner`);
            with any other the encodes run on the engine's thread as without it.
        first_look: with ``background_encode``, a new object prompted with a box is
            shown at once, until its encode lands, by a rough mask made from the
            frame's colours inside the box (:func:`~realtime_sam.tracking.first_look.first_look`,
            10-20 ms): state ``TENTATIVE``, score 0, moved by optical flow like the
            tracks, then replaced by the decoded mask under the same id. Likewise a
            lost track coming back into view through the edge it left by, found there
            by its colours between encodes (``Engine._watch_edges``), until an encode
            finds it.
    """

    reencode_every: int = 5
    mask_prompt: bool = True
    multimask_single_point: bool = True
    decode_batch: int = 32
    auto: bool = False
    max_tracks: int = 64
    background_encode: bool = False
    first_look: bool = True

    def __post_init__(self) -> None:
        check_numbers(self, "engine")  # by type first: "5" < 1 is a TypeError naming no key
        if self.reencode_every < 1:
            raise ConfigError(f"engine.reencode_every must be >= 1, got {self.reencode_every}")
        if self.decode_batch < 1:
            raise ConfigError(f"engine.decode_batch must be >= 1, got {self.decode_batch}")
        if self.max_tracks < 1:
            raise ConfigError(f"engine.max_tracks must be >= 1, got {self.max_tracks}")


# Below this visible fraction of its whole (moved) soft mask, an object counts as partly
# hidden: its visible box does not correct its motion model.
_MEASURED_VISIBLE = 0.8


# How much more like the decoded object (histogram intersection) a mask moved as its track moved
# must look than the flow's replay of it, for a landing to take it instead (Engine._likelier).
_LIKELIER = 0.05
# A mask whose box grows more than this in one frame has picked up stray islands.
_MAX_GROWTH = 2.0

# With background encodes, the edge a lost track left by is watched every this many processed
# frames for it coming back (see Engine._watch_edges).
_WATCH_EVERY = 3
# ... when its whole size covers at least this share of the frame: a smaller object has too
# few colours to tell from look-alikes (the hard scene's 35 px object was "seen" on them for
# 159 frames in two clips, where the larger ones never were).
_WATCH_MIN_AREA = 0.01

# A live track's decode under this share of its last whole decoded area is asked again with
# the box the track was last decoded at joined to its prompt box (Engine._ask_again).
_SHRUNK = 0.5

_LOWRES = 256  # side of the decoder's low-res logits (ModelRunner.decode)


def _runner_array(value: object, name: str, what: str) -> np.ndarray:
    """``value`` from the runner method ``name`` as a numpy array (a CPU torch tensor converts; a GPU one does not)."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(
            f"{name} returned {what} that are no array ({describe_error(exc)}); expected numpy arrays (see realtime_sam.ModelRunner)"
        ) from exc


def _same_size(box_then, box_now) -> np.ndarray:
    """``box_then``'s size centred where ``box_now`` is."""
    b0, b1 = np.asarray(box_then, dtype=np.float64), np.asarray(box_now, dtype=np.float64)
    c = (b1[:2] + b1[2:]) / 2.0
    half = (b0[2:] - b0[:2]) / 2.0
    return np.concatenate([c - half, c + half])


def _disagree(box_a, box_b) -> bool:
    """Whether two estimates of one object's box now disagree: centres apart by more than a
    quarter of its size (at least 4 pixels), or sizes by more than a factor 1.5."""
    a, b = np.asarray(box_a, dtype=np.float64), np.asarray(box_b, dtype=np.float64)
    shift = math.hypot((a[0] + a[2] - b[0] - b[2]) / 2.0, (a[1] + a[3] - b[1] - b[3]) / 2.0)
    ratio = box_area(a) / box_area(b)
    return shift > max(4.0, 0.25 * math.sqrt(box_area(b))) or not 1.0 / 1.5 <= ratio <= 1.5


def _moved(d: Detection, box_then, box_now, mask_now: np.ndarray | None = None) -> Detection:
    """A detection decoded on an earlier frame, moved to now.

    ``box_then`` -> ``box_now`` define a translation and a uniform scale,
    applied to the low-res logits (the next mask prompt) and, unless
    ``mask_now`` (the mask replayed by flow) is given, to the mask. A
    searched mask keeps its box then as ``found_at``.
    """
    m = box_motion(box_then, box_now)
    if np.abs(m - np.eye(2, 3)).max() < 1e-3 and mask_now is None:
        return d
    h, w = d.mask.shape
    if mask_now is None:
        # Replicated border: a mask cut by the frame's edge goes on beyond it (what moves into view is filled in).
        mask_now = cv2.warpAffine(d.mask.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE) > 0
    logits = None if d.logits is None else warp_logits(d.logits, m, (h, w))
    box = mask_to_box(mask_now)
    # A searched mask stays one (taken on looks, where the search may find it), judged where it was found.
    found_at = d.found_at if d.found_at is not None or not d.searched else d.box
    return dataclass_replace(
        d, mask=mask_now, box=box if box is not None else (0.0, 0.0, 0.0, 0.0), logits=logits, found_at=found_at
    )


@dataclass(frozen=True)
class _NewObject(ObjectPrompt):
    """A new object's prompt with the track id :meth:`Engine.add_object` reserved for it."""

    new_id: int = 0


def _reserved_id(prompt: ObjectPrompt) -> int | None:
    return prompt.new_id if isinstance(prompt, _NewObject) else None


@dataclass
class _FirstLook:
    """An object shown before an encode decodes it (see :mod:`~realtime_sam.tracking.first_look`):
    a new object, or a lost one seen coming back into view (``since``: the frame it was seen on).

    ``mask`` is ``HxW bool`` on the current frame, ``box`` its ``XYXY`` box.
    """

    mask: np.ndarray
    box: np.ndarray
    label: str | None
    since: int | None = None  # a lost track's: the frame it was seen coming back on
    start: tuple[int, np.ndarray] | None = None  # a new object's: the frame it was first shown on (its encode's), and its box there
    followed: bool = True  # flow moved it on every frame since it was shown

    def result(self, track_id: int) -> TrackResult:
        return TrackResult(track_id, self.mask, tuple(float(v) for v in self.box), 0.0, TrackState.TENTATIVE, self.label)


class _Look(NamedTuple):
    """Where one lost track is looked for on an encoded frame (see :meth:`Engine._request`)."""

    track_id: int
    rings: tuple[np.ndarray, ...]  # ``HxW bool`` regions, nearest first; each excludes the ones before
    appearance: np.ndarray  # the track's colour descriptor
    extent: tuple[float, float]  # the object's whole ``(w, h)``, source pixels
    partly_out: bool  # lost at an edge: the first ring's windows are scored over their part in view


class _Anchor(NamedTuple):
    """Where a live track was last decoded, for asking again where the flow lost it
    (:meth:`Engine._ask_again`); copied from the tracker when an encode starts."""

    decoded_box: np.ndarray  # ``XYXY`` box of its last decoded mask
    full_area: float  # pixels: the area of its last whole decoded mask
    ref_area: float  # pixels: its reference area (what the tracker takes, with ``looks``)
    looks: np.ndarray | None  # its colour descriptor


class _DecodeRequest(NamedTuple):
    """All that is decoded against one embedding, fixed when its encode starts.

    Built on the inference thread from the tracker's state at the encoded
    frame; decoding it (:meth:`Engine._decode`) reads nothing else of the
    engine, so a background encode's masks are decoded on the worker while
    frames go on.
    """

    image: np.ndarray  # the encoded frame, ``HxWx3 uint8`` BGR
    prompts: tuple[TrackPrompt, ...]  # the tracks' prompts
    looks: tuple[_Look, ...]  # lost tracks searched for
    taken: np.ndarray | None  # ``HxW bool``: live tracks' masks, left out of the search
    new: tuple[tuple[ObjectPrompt, TrackPrompt | None], ...]  # new prompts; a refinement with its track's state
    anchors: Mapping[int, _Anchor]  # live tracks not partly hidden: where each was last decoded


class _Decoded(NamedTuple):
    """The masks of one :class:`_DecodeRequest`, on the encoded frame."""

    tracks: list[Detection]  # one per prompt, ``source_track`` set
    searched: list[Detection]  # search candidates, ``searched`` set
    new: list[tuple[ObjectPrompt, Detection | None]]  # ``None``: the prompt decoded to nothing
    found: list[Detection]  # the detector's boxes, labelled


class _EncodeAndDecode:
    """The worker's job: embed one frame (and run the detector on it), make the embedding
    current and decode the job's request against it. Returns ``(embedding, _Decoded)``.

    The frame is the job's newest (:meth:`_BackgroundJob.take`): a runner with
    ``embed_latest`` (a stream's :class:`~realtime_sam.app.scheduler.SharedRunner`)
    takes it when the shared encoder starts on this stream, after the other
    streams' encodes ahead of it; any other runner takes it when the worker starts.
    """

    def __init__(self, engine: "Engine", detect: DetectorPrompts | None = None) -> None:
        self.engine, self.detect = engine, detect

    def __call__(self, job: _BackgroundJob) -> tuple[object, _Decoded]:
        # An encode dropped while running (e.g. still on a closed pipeline's worker) would make
        # its old embedding current between this one's use() and its decode.
        wait_for(job.after)
        runner = self.engine.runner
        embed_latest = getattr(runner, "embed_latest", None)
        if callable(embed_latest):
            embedding = embed_latest(job.take)
        else:
            embedding = runner.embed(job.take()[0])  # type: ignore[attr-defined]
        image, request = job.image, job.request  # fixed once taken
        boxes = self.detect(image) if self.detect is not None else None
        runner.use(embedding)  # type: ignore[attr-defined]
        return embedding, self.engine._decode(request, boxes)


class _Plan(NamedTuple):
    """What one frame does, decided after propagation (see :meth:`Engine._plan`)."""

    live: list[TrackPrompt]  # the tracks' prompts before any landing
    due: list[ObjectPrompt]  # new prompts decoded on this frame's encode
    later: list[ObjectPrompt]  # new prompts sent to the worker instead
    periodic: bool  # the periodic re-encode is due
    discovery_due: bool  # auto mode's point grid runs on this frame
    background: bool  # a worker is lent and the runner can embed off-thread
    encode: bool  # encode on the calling thread now
    detect_due: bool = False  # the detector runs on this frame (here, or on the worker with its encode)


class Engine:
    """Tracks objects through a stream of frames. Not thread-safe except for the command methods."""

    def __init__(
        self,
        runner: ModelRunner,
        config: EngineConfig = EngineConfig(),
        *,
        tracker_config: TrackerConfig = TrackerConfig(),
        propagation_config: PropagationConfig = PropagationConfig(),
        discovery_config: DiscoveryConfig = DiscoveryConfig(),
        ids: IdCounter | None = None,
        detector: Detector | None = None,
        detect_config: DetectConfig = DetectConfig(),
    ) -> None:
        self.runner = runner
        self.config = config
        self.discovery_config = discovery_config
        self.tracker = Tracker(tracker_config, ids or IdCounter())
        # The sparse propagator also replays new prompts' masks in background mode.
        self.propagator = MaskPropagator(propagation_config)
        self.dense: DenseFlowPropagator | None = None
        if propagation_config.method == "dense":
            self.dense = DenseFlowPropagator(
                max_side=propagation_config.max_side, preset=propagation_config.flow_preset,
                fb_tolerance=propagation_config.fb_tolerance, rigid_tolerance=propagation_config.rigid_tolerance,
                key_flow=propagation_config.key_flow, edge_motion=propagation_config.edge_motion,
            )
        self._order: list[int] = []  # track ids, front to back (who hides whom)
        self._hidden: dict[int, bool] = {}  # partly hidden behind a track in front, at the last propagation
        self._amodal: dict[int, np.ndarray] = {}  # each track's whole (amodal) logits after the last propagation
        self._lock = threading.Lock()
        self._commands: list[tuple[str, object]] = []
        self._pending: list[ObjectPrompt] = []
        self._last_index = -1  # the last frame processed (-1: none yet)
        # Reserved id -> first look at a new object whose encode is in flight (shown till it lands).
        self._first_looks: dict[int, _FirstLook] = {}
        self._reshaper = Reshaper()  # landed masks' shapes brought up to date (_reshaped)
        self._since_watch = 0  # frames processed since the edges were last watched for lost tracks
        self._auto = config.auto
        self._prev_image: np.ndarray | None = None
        self._since_encode: int | None = None
        self._since_discovery: int | None = None
        self._last_tracks: tuple[TrackResult, ...] = ()
        # This frame's dense-flow masks as shown, their edges re-decided (FlowResult.shown), by
        # track: (the mask the tracker was given, the one to show while the tracker still holds it).
        self._shown: dict[int, tuple[np.ndarray, np.ndarray | Deferred]] = {}
        # The last result's tracks whose shown mask is left to the two-way (SoftMasks.shown).
        self._later: dict[int, Deferred] = {}
        # This frame's backward flow at the cells of each track dense flow moved (FlowResult.back).
        self._flow_back: dict[int, np.ndarray] = {}
        self.last_encode_index: int | None = None
        self.background = BackgroundEncodes()
        # Detector-prompted tracking (see tracking/detection.py): its boxes start labelled tracks.
        self.detection = DetectorPrompts(detector, detect_config) if detector is not None else None

    @classmethod
    def from_config(
        cls, config: Config | Mapping[str, Any] | str | Path, *, runner: ModelRunner | None = None, progress: bool = True, detector: Detector | None = None
    ) -> Engine:
        """An engine with the ``engine``, ``tracker``, ``propagation``, ``discovery`` and ``detect`` sections of ``config``.

        Around ``runner`` when given; else the model named by ``config.model``
        is loaded (weights downloaded if needed, with a progress bar unless
        ``progress`` is false). ``detector`` prompts tracks with its boxes;
        when it is ``None`` and ``config.detect.model`` names one, that is loaded.

        ``config`` may also be what :func:`~realtime_sam.config.load_config` takes: a preset
        name, a YAML path or a mapping of sections (``{"engine": {"reencode_every": 3}}``).

        Raises:
            ConfigError: a ``config`` that is none of those or holds a bad value (one line naming
                the key), or ``detect`` settings changed from their defaults without a detector
                (neither ``detector`` nor ``config.detect.model``).
        """
        # Imported here: realtime_sam.config imports this module (for EngineConfig).
        from realtime_sam.config import Config as _Config, load_config

        if not isinstance(config, _Config):
            config = load_config(config)  # a dict gave "'dict' object has no attribute 'detect'"
        if detector is None:
            config.detect.require_detector()
        if detector is None and config.detect.model:
            from realtime_sam.model.detector import load_detector

            detector = load_detector(config.detect, config.model.device)
        if runner is None:
            # Imported here: the loader pulls in torch, the engine itself stays free of it.
            from realtime_sam.model.loader import load_runner

            runner = load_runner(config.model, progress=progress)
        return cls(
            runner,
            config.engine,
            tracker_config=config.tracker,
            propagation_config=config.propagation,
            discovery_config=config.discovery,
            detector=detector,
            detect_config=config.detect,
        )

    # -- background encoding (called by the Pipeline) -----------------------------------

    @property
    def wants_worker(self) -> bool:
        """True when ``background_encode`` is on and the runner can embed off-thread (has ``embed`` and ``use``)."""
        # Both: the worker makes its embedding current with use() before it decodes, so a
        # runner with embed() alone would fail there, on the worker, at the first landing.
        return (
            self.config.background_encode
            and callable(getattr(self.runner, "embed", None))
            and callable(getattr(self.runner, "use", None))
        )

    def attach_worker(self, submit: Callable[..., Future] | None) -> None:
        """Lend the engine a worker: ``submit(fn, *args) -> Future`` runs ``fn`` on another thread.

        ``None`` takes it back; an encode still running is then forgotten (its
        new prompts are kept and encode on the next frame).
        """
        self.background.submit = submit
        if submit is None:
            self._drop_jobs()

    @property
    def wants_flow_worker(self) -> bool:
        """True when dense flow runs and there is a second core for one direction of its flow (:meth:`attach_flow_worker`)."""
        return self.dense is not None and usable_cpu_count() >= 2

    def attach_flow_worker(self, submit: Callable[..., Future] | None) -> None:
        """Lend dense flow a thread of its own: ``submit(fn, *args) -> Future``; ``None`` takes it back.

        Each crop's DIS flow one way runs there while the other runs on the
        engine's thread, and sparse flow's step runs there beside the rest of
        dense flow's (the same masks, a step about a fifth quicker on 2
        cores). Two-way's backward run (:meth:`two_way`) uses it too. Not the
        encode worker (:meth:`attach_worker`): a flow must not wait behind an encode.
        """
        if self.dense is not None:
            self.dense.lend(submit)

    # Older names of the background state, kept for tests and diagnostics that read them.
    @property
    def _submit(self) -> Callable[..., Future] | None:
        return self.background.submit

    @property
    def _history(self) -> deque[tuple[int, WorkFrame]]:
        return self.background.history

    @_history.setter
    def _history(self, kept: deque[tuple[int, WorkFrame]]) -> None:
        self.background.history = kept

    # -- two-way propagation (files; called by the Pipeline) -----------------------------

    def soft_masks(self) -> SoftMasks:
        """Every track's ``256x256`` low-res logits after the last ``process`` call, and who is in front.

        With dense flow the logits are the whole object, hidden parts included;
        tracks with no logits yet are absent. After :meth:`two_way`, ``shown``
        names the result's tracks whose edges are left to the two-way. The
        arrays are the tracker's own: copy them before keeping them past the
        next ``process`` call.
        """
        logits = {tr.id: tr.logits for tr in self.tracker.tracks() if tr.logits is not None}
        return SoftMasks(logits, tuple(self._order), dict(self._flow_back), dict(self._later))

    def encode_next(self) -> None:
        """Make the next ``process`` call encode (when there are tracks), whatever ``reencode_every`` says.

        Called from the thread that calls ``process`` (:meth:`TwoWay.finish
        <realtime_sam.tracking.two_way.TwoWay.finish>` at the end of a file).
        With background encodes the encode goes to the worker as usual.
        """
        self._since_encode = None

    def two_way(self, *, max_held: int = 120) -> TwoWay | None:
        """A :class:`~realtime_sam.tracking.two_way.TwoWay` for this engine's results (same flow settings), or
        ``None`` when masks do not move by dense flow (``propagation.method`` is not ``"dense"``).

        From then on the engine leaves the edges of dense flow's masks to it: push every
        result, with :meth:`soft_masks`, through the two-way, whose results show them
        (:attr:`SoftMasks.shown <realtime_sam.tracking.two_way.SoftMasks.shown>`).
        """
        if self.dense is None:
            return None
        # The backward run reads the flow this engine's forward steps computed over the same
        # frame pairs (roles swapped) instead of running DIS again.
        # The backward run's visible masks are not used (its logits are blended): none are made, and
        # no edges re-decided there; the blended masks' edges are re-decided by the two-way itself,
        # as this engine's are.
        two_way = TwoWay(self.dense.fresh(masks=False), max_held=max_held, edges=self.dense.edge_motion)  # checks max_held
        flows = FlowCache(max_frames=min(two_way.max_held, 32))
        self.dense.record_to = two_way.propagator.reuse_from = flows
        # The forward run's edges are worked out only where the two-way shows its masks (the
        # tracks it does not blend); it blends the rest, and their edges were made for nothing
        # (4-4.5 ms a frame for three objects at 640x480). From here this engine's results show
        # those tracks' masks as warped, and SoftMasks.shown gives the masks with their edges.
        self.dense.defer_edges = True
        return two_way

    def reset(self) -> None:
        """Start over for a new source: forget every track, first look and prompt not yet
        decoded, the last frame and the flow's state; keep the model, the settings, the
        lent workers and the objects added since the last ``process`` call (they start on
        the new source). Ids keep counting up: none is reused.

        Frame indices start again at 0 with a new source, and its first frame has nothing
        to do with the old one's last: without this the old tracks were carried into it,
        moved by flow between the two unrelated frames (:func:`realtime_sam.track` calls
        it on an engine passed in). Not a command: call it while no ``process`` call runs.
        An encode still running on the worker is not waited for here; the runner is not used
        again (on this thread or a worker) until it has ended, so its old embedding is never
        decoded against on the new source.
        """
        self._start_over()
        self._pending.clear()  # the old source's, the jobs' new prompts among them
        if self.detection is not None:
            self.detection.restart()  # due on the new source's first frame, as on any source's
        self.tracker.restart()
        if self.dense is not None:
            # A two-way made for the old source is gone with it (a Pipeline makes a new one).
            self.dense.record_to = None
            self.dense.defer_edges = False
        self._order, self._hidden, self._amodal = [], {}, {}
        self._shown, self._later, self._flow_back = {}, {}, {}
        self._prev_image = None
        self._last_index = -1
        self._since_discovery = None
        self._since_watch = 0
        self._last_tracks = ()
        self.last_encode_index = None

    def _start_over(self) -> None:
        """Forget every track, first look, encode in flight and the flow's state (new prompts wait in ``_pending``).

        What a change of frame size and :meth:`reset` both need: masks of another
        source or size cannot be carried or matched.
        """
        self.tracker.clear()
        self._first_looks.clear()
        self.propagator.reset()
        if self.dense is not None:
            self.dense.reset()
        self._since_encode = None
        self._drop_jobs()

    # -- commands (any thread) ---------------------------------------------------------

    def add_object(self, prompt: ObjectPrompt) -> int:
        """Queue a new object (or a refinement when ``prompt.track_id`` is set); returns its track id.

        The id of a new object is reserved here, at the call, so calls from
        different threads get different ids; the track it starts (on the
        frame the prompt is decoded, ``start_frame`` or later) has that id in
        every :class:`~realtime_sam.types.FrameResult`. An object that never
        becomes a track (its box lies outside the frame, ``max_tracks`` is
        reached, :meth:`clear` came first) leaves its id unused; ids are never
        reused. A refinement returns ``prompt.track_id``.

        The prompt is checked by :func:`~realtime_sam.tracking.prompts.validate_prompt`
        (finite coordinates, 0/1 labels, no inverted or zero-area box, a box
        or a label-1 point). Points and boxes outside the frame are clamped
        into it when decoded; once a frame has been seen, a box lying wholly
        outside it is refused here.

        Raises:
            PromptError: the prompt breaks one of those rules.
        """
        prompt = validate_prompt(prompt)
        prev = self._prev_image
        if prev is not None:
            # Fail at the call (a clear error to the user) rather than drop it later.
            clamp_prompt(prompt, int(prev.shape[1]), int(prev.shape[0]))
        if prompt.track_id is None:
            prompt = _NewObject(**{f.name: getattr(prompt, f.name) for f in fields(ObjectPrompt)}, new_id=self.tracker.reserve_id())
        with self._lock:
            self._commands.append(("add", prompt))
        return prompt.new_id if isinstance(prompt, _NewObject) else int(prompt.track_id)  # type: ignore[arg-type]

    def remove_object(self, track_id: int) -> None:
        """Queue the removal of a track (or of an object added whose track has not started yet).

        Applied at the next ``process`` call; an id with no such track or object is ignored.

        Raises:
            PromptError: ``track_id`` is not an integer (a float was truncated: ``1.5`` removed track 1).
        """
        if isinstance(track_id, bool) or not isinstance(track_id, numbers.Integral):
            raise PromptError(
                f"remove_object takes a track id (an integer, from add_object or a result's track_id), got {short_repr(track_id)}"
            )
        with self._lock:
            self._commands.append(("remove", int(track_id)))

    def clear(self) -> None:
        """Queue the removal of every track and of every object added and not yet decoded (ids are not reused)."""
        with self._lock:
            self._commands.append(("clear", None))

    def set_auto(self, enabled: bool) -> None:
        """Queue turning discovery (new objects found by the point grid) on or off."""
        with self._lock:
            self._commands.append(("auto", bool(enabled)))

    @property
    def auto(self) -> bool:
        return self._auto

    @property
    def has_pending(self) -> bool:
        """True when commands are queued or new prompts wait for a background encode."""
        with self._lock:
            return bool(self._commands) or self.background.has_pending

    def not_started(self) -> dict[int, ObjectPrompt]:
        """The objects added whose ``start_frame`` lies after the last frame processed: reserved id -> prompt.

        At the end of a run, the objects never tracked because the source ended (or
        ``max_frames`` stopped the run) before their ``start_frame``: a file without a
        frame count up front (MKV, WebM, TS) cannot be checked before the run, as
        :func:`~realtime_sam.tracking.prompts.check_start_frame` checks the others.
        """
        with self._lock:
            queued = [arg for kind, arg in self._commands if kind == "add"]
        return {
            p.new_id: p for p in (*self._pending, *queued) if isinstance(p, _NewObject) and p.start_frame > self._last_index
        }

    def track_at(self, x: float, y: float) -> int | None:
        """The id of the object under pixel ``(x, y)`` in the last result, by the one rule of
        :func:`~realtime_sam.tracking.association.track_under` (the mask drawn on top, else the nearest box)."""
        return track_under(x, y, ((t.track_id, t.mask, t.box) for t in self._last_tracks))

    # -- the frame loop ----------------------------------------------------------------

    def process(self, frame: Frame) -> FrameResult:
        """Advance every track to ``frame`` and return what is visible in it.

        Raises:
            ValueError: ``frame`` is not a :class:`~realtime_sam.types.Frame` whose image is
                ``HxWx3 uint8`` (BGR) with ``H, W >= 1``; the engine is left as it was, so
                the next good frame goes on from the last one.
        """
        _check_frame(frame)
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        self._start_frame(frame)
        self._propagate(frame, timings)
        plan = self._plan(frame)
        if plan.encode:
            self._encode_now(frame, plan, timings)
            encoded = True
        else:
            encoded = self._background_step(frame, plan, timings)
        return self._finish(frame, encoded, t_start, timings)

    # -- the steps of a frame ----------------------------------------------------------

    def _start_frame(self, frame: Frame) -> None:
        """Apply queued commands, start over on a resolution change, predict every track's motion."""
        self._apply_commands()
        self._last_index = frame.index
        prev = self._prev_image
        if prev is not None and prev.shape != frame.image.shape:
            # The stream changed resolution (e.g. an RTSP renegotiation): masks of
            # the old size cannot be matched against new ones, so start over.
            tracks = len(self.tracker)
            self._start_over()  # the prompts of encodes in flight come back to _pending
            # A prompt due before this frame is in the old size's pixels: applied here it was cut to
            # the new frame at the same numbers (a box drawn on 320x240 frames put on 160x120 ones).
            # Dropped with the tracks; those that start here or later are in the new frames' pixels.
            stale = [p for p in self._pending if p.start_frame < frame.index]
            self._pending = [p for p in self._pending if p.start_frame >= frame.index]
            _log.warning(
                "frame size changed from %dx%d to %dx%d at frame %d; dropping %d track(s)%s",
                prev.shape[1], prev.shape[0], frame.width, frame.height, frame.index, tracks,
                f" and {len(stale)} prompt(s) not yet decoded (given on the old size: prompt again)" if stale else "",
            )
        self.tracker.predict(frame.index, frame.timestamp)

    def _propagate(self, frame: Frame, timings: dict[str, float]) -> None:
        """Carry every track's mask from the previous frame by optical flow (coast where flow fails).

        Dense flow moves each track's low-res logits per pixel, tracks in front
        hiding those behind them; tracks without logits, and every track with
        ``propagation.method: flow``, move as one piece by sparse flow.
        """
        tracker = self.tracker
        looks = self._first_looks
        self._flow_back = {}
        if self._prev_image is not None and self._prev_image.shape == frame.image.shape and (tracker.tracks() or looks):
            t = time.perf_counter()
            items = {tr.id: (tr.mask, tr.box) for tr in tracker.tracks() if tr.mask is not None and tr.mask.any()}
            hidden = [tid for tid, h in self._hidden.items() if h]
            everything = {**items, **{tid: (fl.mask, fl.box) for tid, fl in looks.items()}}
            # Sparse flow moves first looks and checks dense flow's boxes. It needs nothing of
            # dense flow's step, so that step runs it on the thread lent to it once its own
            # flows are done, beside the rest of its work, which keeps one core busy and left
            # the other idle (a step for three objects at 640x480: 46 -> 42 ms; the same masks).
            got: dict[str, dict] = {}
            prev_image = self._prev_image

            def sparse_step() -> None:
                got["sparse"] = self.propagator.step(prev_image, frame.image, everything, hidden) if everything else {}

            if self.dense is not None:
                soft = {tid: tracker.get(tid).logits for tid in items if tracker.get(tid).logits is not None}  # type: ignore[union-attr]
                decoded = [tid for tid in soft if tracker.get(tid).logits_box is not None]  # type: ignore[union-attr]
                moved = self.dense.step(self._prev_image, frame.image, soft, self._order, decoded, beside=sparse_step)
            else:
                sparse_step()
            sparse = got["sparse"]
            for tid, fl in looks.items():
                mask, box, ok = sparse.pop(tid)
                if ok:  # else it stays where it was: there is nothing better to show
                    fl.mask, fl.box = mask, np.asarray(box, dtype=np.float64)
                else:
                    fl.followed = False
            if self.dense is not None:
                # The flow may have shown a new depth order where two objects met: keep it.
                # (dense.order names exactly the tracks moved now; see its reset in step.)
                seen = iter(self.dense.order)
                self._order = [next(seen) if tid in moved else tid for tid in self._order]
                self._order += [tid for tid in seen]
                self._amodal = {tid: r.logits for tid, r in moved.items()}
                self._hidden = {tid: r.visible < _MEASURED_VISIBLE for tid, r in moved.items()}
                for tid, r in moved.items():
                    check = sparse[tid]
                    before = tracker.get(tid).box  # type: ignore[union-attr]
                    if not r.measured or (r.box is not None and (
                        box_area(r.box) > _MAX_GROWTH * box_area(before) or (check.ok and _disagree(r.box, check.box))
                    )):
                        # Dense flow found nothing reliable on it, moved it unlike the corners
                        # tracked inside it (periodic textures fool it), or blew it up in one
                        # frame (stray islands of look-alike colour): sparse flow below.
                        continue
                    del sparse[tid]
                    # A partly hidden object's visible box says little of its motion.
                    whole = r.visible >= _MEASURED_VISIBLE
                    if r.box is None or not tracker.apply_propagation(
                        tid, r.mask, r.box, frame.index, logits=r.logits, measured=whole
                    ):
                        tracker.coast(tid, frame.index)  # wholly hidden or out of the frame
                    else:
                        if r.back is not None:
                            self._flow_back[tid] = r.back
                        if r.shown is not None:
                            self._shown[tid] = (r.mask, r.shown)
            for tid, (mask, box, ok) in sparse.items():
                if ok:
                    tr = tracker.get(tid)
                    logits = None
                    if tr is not None and tr.logits is not None and self.dense is not None:
                        # Move the logits with the mask now (from where they are: their decode box, or
                        # last frame's box once dense flow moved them): dense flow takes them up again
                        # next frame as they stand, and stale ones would put the object a frame back.
                        src = tr.logits_box if tr.logits_box is not None else tr.box
                        logits = move_logits(tr.logits, src, box, mask.shape)
                    tracker.apply_propagation(tid, mask, box, frame.index, logits=logits)
                else:
                    tracker.coast(tid, frame.index)
            timings["propagate"] = (time.perf_counter() - t) * 1e3
        self._prev_image = frame.image

    def _plan(self, frame: Frame) -> _Plan:
        """Decide what this frame encodes, here or on the worker; takes the prompts due off the queue."""
        background = self.background.attached and self.wants_worker
        due = [p for p in self._pending if p.start_frame <= frame.index]
        self._pending = [p for p in self._pending if p.start_frame > frame.index]
        live = self.tracker.prompts()
        discovery_due = self._auto and (
            self._since_discovery is None or self._since_discovery + 1 >= self.discovery_config.every_k_frames
        )
        # Tracks with nothing to prompt (one that flow carried out of the frame) still count: the
        # encode is what turns them lost, and then looks for them.
        periodic = bool(self.tracker.tracks()) and (
            self._since_encode is None or self._since_encode + 1 >= self.config.reencode_every
        )
        detect_due = self.detection is not None and self.detection.due()
        # New prompts go to the worker too, unless discovery encodes this frame anyway.
        later = due if background and not discovery_due else []
        if later:
            due = []
        if background and (later or live or self.background.busy or (detect_due and not discovery_due)):
            # A background encode's masks are replayed from its frame to the one where it lands
            # (this frame may start one: kept until no encode in flight needs it).
            self.background.keep(frame.index, self.propagator.work(frame.image).detached())
        encode = bool(due) or discovery_due or ((periodic or detect_due) and not background)
        return _Plan(live, due, later, periodic, discovery_due, background, encode, detect_due)

    def _encode_now(self, frame: Frame, plan: _Plan, timings: dict[str, float]) -> None:
        """Encode this frame on the calling thread: decode every track, the new prompts and discovery; associate."""
        # Background encodes are older than this one: let them finish, landing those with new prompts.
        for job in self.background.settle():
            self._land(job, frame.index, timings)
        # Encodes dropped while running (Engine.reset, a new frame size) end by making their
        # old frame's embedding current: one ending after this encode would be decoded against.
        self.background.wait_dropped()
        t = time.perf_counter()
        self.runner.encode(frame.image)
        timings["encode"] = (time.perf_counter() - t) * 1e3
        self._since_encode = 0
        self.last_encode_index = frame.index
        t = time.perf_counter()
        decoded = self._decode(self._request(frame.image, plan.live, plan.due))
        detections = decoded.tracks + decoded.searched
        new_objects = decoded.new
        timings["decode"] = (time.perf_counter() - t) * 1e3
        candidates: list[Detection] = []
        if plan.discovery_due:
            t = time.perf_counter()
            candidates = self._discover(frame.image)
            self._since_discovery = 0
            timings["discover"] = (time.perf_counter() - t) * 1e3
        elif self._since_discovery is not None:
            self._since_discovery += 1
        if self.detection is not None:
            if plan.detect_due:
                t = time.perf_counter()
                self.detection.started()
                candidates += self._decode_detections(self.detection(frame.image), frame.image)
                timings["detect"] = (time.perf_counter() - t) * 1e3
            else:
                self.detection.tick()
        t = time.perf_counter()
        tracker = self.tracker
        if candidates:
            # Found on the object a user prompts on this frame: the user's track, not a second one.
            added = [(p, d) for p, d in new_objects if p.track_id is None and d is not None]
            candidates, kept = yield_to_prompts(candidates, [d for _, d in added], tracker.config.match_iou_thresh)
            swap = {id(d): k for d, k in zip([d for _, d in added], kept)}
            new_objects = [(p, swap.get(id(d), d)) for p, d in new_objects]
        refined = [d for p, d in new_objects if p.track_id is not None and d is not None]
        tracker.update(detections + refined, frame.index, candidates, self._whole_masks())
        name_tracks(tracker.tracks(), candidates, tracker.config.match_iou_thresh)
        self._start_tracks(new_objects, frame.index)
        self._end_lost_looks(frame.index)
        self._update_order()
        timings["associate"] = (time.perf_counter() - t) * 1e3

    def _background_step(self, frame: Frame, plan: _Plan, timings: dict[str, float]) -> bool:
        """No encode here: land the finished background encodes, submit the next one. True if any landed."""
        if self._since_encode is not None:
            self._since_encode += 1
        if self._since_discovery is not None:
            self._since_discovery += 1
        detect = self.detection is not None and plan.detect_due and plan.background
        if self.detection is not None and not detect:
            self.detection.tick()
        if not plan.background:
            return False
        landed = False
        live = plan.live
        while (job := self.background.next_finished()) is not None:
            self._land(job, frame.index, timings)
            landed = True
            live = self.tracker.prompts()  # the corrected tracks prompt the next encode
        if detect or plan.later or (not self.background.busy and plan.periodic and live):
            # Encoded and decoded on the worker (with the detector when it is due): the masks
            # land on a later frame, and this thread goes on with the frames meanwhile.
            if detect:
                self.detection.started()  # type: ignore[union-attr]
                self.detection.in_flight = True  # type: ignore[union-attr]
            run = _EncodeAndDecode(self, self.detection if detect else None)
            request = self._request(frame.image, live, plan.later)
            self.background.start(run, frame.image, frame.index, live, plan.later, self._lost_ids(live), detect, request)
            self._since_encode = 0
            if plan.later and self.config.first_look:
                t = time.perf_counter()
                self._look_first(frame.image, frame.index, plan.later)
                timings["first_look"] = (time.perf_counter() - t) * 1e3
        elif live and (waiting := self.background.waiting()) is not None:
            # Its encode still waits for an encoder other streams share: it embeds this newer
            # frame instead when its turn comes, so its masks land one encode old, not K.
            waiting.offer(frame.index, frame.image, self._request(frame.image, live, []), live, self._lost_ids(live))
        self._since_watch += 1
        if self.config.first_look and self._since_watch >= _WATCH_EVERY:
            self._since_watch = 0
            t = time.perf_counter()
            if self._watch_edges(frame):
                timings["first_look"] = timings.get("first_look", 0.0) + (time.perf_counter() - t) * 1e3
        return landed

    def _watch_edges(self, frame: Frame) -> bool:
        """Look for lost tracks coming back into view through the edge they left by; True if any were looked for.

        Live on a CPU the encode that finds such an object lands 1-1.5 s after
        it started, and the one running when the object came back started
        before: it was found 1.5-3 s after it came back, or not at all.
        Meanwhile, for a track whose whole size covers at least 1 % of the
        frame (a smaller one has too few colours to tell from look-alikes):

        * where it may be by now (:meth:`~realtime_sam.tracking.tracks.Tracker.search_region`:
          the band of one object size along that edge, widened by what it may
          have travelled since an encode last looked) is searched by its
          colours (:func:`~realtime_sam.tracking.appearance.search_boxes`, a few ms);
        * a first look (GrabCut) in the best window is shown under the track's
          id when its pixels look like the track (``tracker.search_appearance``;
          beyond the band 0.1 more, as the tracker asks of the search's masks
          there) and it is at most twice the track's whole size and four times
          the area of the decode that size was noted from;
        * the look is taken again every few frames within one object size of
          where it was (sparse flow seldom follows a sliver at the edge).

        The track stays lost until an encode finds it; an encode that started
        after the look and did not find it ends the look. Measured and dropped
        (README, Tracking quality): looks 0.5 alike (look-alikes along the edge
        shown while the object was away), the band alone (played live, the
        object was in beyond it by the time it looked alike enough), putting the
        lost track's motion model at its look (no better: the search finds it).
        """
        tracker = self.tracker
        image = frame.image
        size = image.shape[:2]
        least = _WATCH_MIN_AREA * size[0] * size[1]
        watched = [
            t for t in tracker.tracks()
            if t.appearance is not None and tracker.left_view(t)
            and t.full_size is not None and float(t.full_size[0] * t.full_size[1]) >= least
        ]
        watched = [t for t in watched if t.id not in self._first_looks or self._first_looks[t.id].since is not None]
        if not watched:
            return False
        frame_box = [size[1], size[0], size[1], size[0]]
        taken = self._taken(size)  # what the visible tracks hold: not a lost one
        for t in watched:
            look = self._first_looks.get(t.id)
            w, h = float(t.full_size[0]), float(t.full_size[1])  # type: ignore[index]
            near = None  # where it most likely is (the band): beyond it, it must look more alike
            if look is None:
                region = tracker.search_region(t, tracker.frame, grown=True)
                near = tracker.search_region(t, tracker.frame, grown=False)
                if region is None or region.shape != size:
                    continue
            else:
                region = np.zeros(size, bool)
                x0, y0, x1, y1 = (int(v) for v in np.clip(look.box + np.array([-w, -h, w, h]), 0, frame_box))
                region[y0:y1, x0:x1] = True
            outside = ~region if taken is None else ~region | taken
            for tid, fl in self._first_looks.items():  # nor what the other looks hold
                if tid != t.id:
                    outside |= fl.mask
            for box in search_boxes(image, t.appearance, (w, h), exclude=outside, count=1, partly_out=True):  # type: ignore[arg-type]
                # The window itself (the object's size where its colours are), not grown as for a
                # decoder's prompt: GrabCut's first look is the window's ellipse where it cuts nothing.
                mask = first_look(image, ObjectPrompt(box=tuple(float(v) for v in box)))  # type: ignore[arg-type]
                b = mask_to_box(mask) if mask is not None else None
                if mask is None or b is None:
                    continue
                if not tracker.fits_whole_size(t, b, float(np.count_nonzero(mask)), smaller=True):
                    continue  # larger than the object (or of many times its area, as the tracker asks)
                cx, cy = min(int((box[0] + box[2]) / 2), size[1] - 1), min(int((box[1] + box[3]) / 2), size[0] - 1)
                far = near is not None and not near[cy, cx]
                if similarity(t.appearance, appearance_of(image, mask)) < tracker.search_need(near=not far):
                    continue
                since = frame.index if look is None else look.since
                self._first_looks[t.id] = _FirstLook(mask, np.asarray(b, dtype=np.float64), t.label, since=since)
        return True

    def _end_lost_looks(self, job_frame: int | None) -> None:
        """End the first looks of lost tracks that are gone or found again, and (``job_frame``: the
        encoded frame that just landed) those an encode of their frame or a later one did not find."""
        for tid, fl in list(self._first_looks.items()):
            if fl.since is None:
                continue
            t = self.tracker.get(tid)
            if t is None or t.state != TrackState.LOST or (job_frame is not None and job_frame >= fl.since):
                del self._first_looks[tid]

    def _look_first(self, image: np.ndarray, frame_index: int, prompts: Sequence[ObjectPrompt]) -> None:
        """Show the new objects among ``prompts`` (encoded from frame ``frame_index``) at once, by a
        first look at each (see ``first_look``)."""
        for p in prompts:
            tid = _reserved_id(p)
            if tid is None or tid in self._first_looks:
                continue
            mask = first_look(image, p)
            box = mask_to_box(mask) if mask is not None else None
            if box is not None:
                box = np.asarray(box, dtype=np.float64)
                self._first_looks[tid] = _FirstLook(mask, box, p.label, start=(frame_index, box))  # type: ignore[arg-type]

    def _start_tracks(self, new: Sequence[tuple[ObjectPrompt, Detection | None]], frame_index: int) -> None:
        """Start a track for each new object whose prompt decoded a mask (up to ``max_tracks``),
        under its reserved id; its first look, if any, ends here either way."""
        for p, d in new:
            if p.track_id is not None:
                continue
            tid = _reserved_id(p)
            if tid is not None:
                self._first_looks.pop(tid, None)
            if d is not None and len(self.tracker.tracks()) < self.config.max_tracks:
                self.tracker.add(d, frame_index, tid)

    def _finish(self, frame: Frame, encoded: bool, t_start: float, timings: dict[str, float]) -> FrameResult:
        """Forget frames no encode in flight needs; the tracks visible in ``frame``."""
        self.background.trim()
        self._end_lost_looks(None)  # a lost track expired meanwhile
        tracks = self.tracker.results(frame.index)
        self._later = {}
        if self._shown:
            # Shown with its edge re-decided where the tracker still holds dense flow's mask of this
            # frame (not where a decode or a landing replaced it since); tracking goes on with the
            # flow's own mask, so the edges change what is shown and written, never which track is where.
            # Deferred ones (two-way's) are left to the two-way, which works out only those it shows.
            shown = {r.track_id: s for r in tracks if (s := self._shown_of(r)) is not None}
            self._later = {tid: s for tid, s in shown.items() if isinstance(s, Deferred)}
            tracks = tuple(shown_as(r, s) if isinstance(s := shown.get(r.track_id), np.ndarray) else r for r in tracks)
            self._shown = {}
        if self._first_looks:
            # A lost track seen coming back is shown by its first look instead.
            for tid in self._first_looks:
                self._later.pop(tid, None)
            tracks = tuple(r for r in tracks if r.track_id not in self._first_looks)
            tracks = tuple(sorted(tracks + tuple(fl.result(tid) for tid, fl in self._first_looks.items()), key=lambda r: r.track_id))
        self._last_tracks = tracks
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return FrameResult(frame=frame, tracks=tracks, encoded=encoded, timings=timings)

    # -- internals ---------------------------------------------------------------------

    def _shown_of(self, result: TrackResult) -> np.ndarray | Deferred | None:
        """Dense flow's shown mask for ``result``'s track when its mask is the one that flow gave the tracker."""
        given, shown = self._shown.get(result.track_id, (None, None))
        return shown if shown is not None and result.mask is given else None

    def _drop_jobs(self) -> None:
        """Forget the encodes in flight; their new prompts go back to the queue (they encode next frame)."""
        self._pending.extend(self.background.drop())
        if self.detection is not None:
            self.detection.in_flight = False  # a detector run in flight is forgotten with its encode

    def _land(self, job: _BackgroundJob, frame_index: int, timings: dict[str, float]) -> None:
        """Take a finished background encode's masks (decoded on the worker, on the encoded
        frame), move them to this frame, associate.

        Re-raises the worker's error.
        """
        _, decoded = job.future.result()  # decoded on the worker, on the encoded frame
        if job.detect:
            self.detection.in_flight = False  # type: ignore[union-attr]
        self.last_encode_index = job.frame_index
        prompts = [p for p in job.prompts if self.tracker.get(p.track_id) is not None]  # removed since: dropped
        then = {p.track_id: p.box for p in prompts}
        # Each track's decode that matched its prompt on the encoded frame is its object then,
        # wherever the track's own mask has drifted to since (Detection.matched_then).
        thresh = self.tracker.config.match_iou_thresh
        detections = [
            dataclass_replace(d, matched_then=True)
            if d.source_track in then and box_iou_matrix(then[d.source_track], d.box)[0, 0] >= thresh else d
            for d in decoded.tracks if self.tracker.get(d.source_track) is not None  # type: ignore[arg-type]
        ]
        # Search candidates only for tracks still lost (one found meanwhile needs none).
        detections += [
            d for d in decoded.searched
            if (tr := self.tracker.get(d.source_track)) is not None and tr.state == TrackState.LOST  # type: ignore[arg-type]
        ]
        new = [
            (p, None if p.track_id is not None and self.tracker.get(p.track_id) is None else d)  # refined track removed since
            for p, d in decoded.new if any(p is q for q in job.new)  # cleared since: dropped
        ]
        found = decoded.found

        t = time.perf_counter()
        # Every mask is replayed by flow through the kept frames, from the encoded frame to this
        # one. A track's own motion since (its mask carried frame by frame) is the fallback only:
        # that mask drifted from the object before the encode and after, while the new mask's
        # corners lie on the object (hard scene live-sim 0.28 -> 0.35 with the replay).
        replayable = self.background.replay_frames(job.frame_index) is not None
        carried = []
        regained: list[Detection] = []  # lost then and now, and found on the encoded frame: replayed one by one
        followed: list[Detection] = []  # visible then and now: replayed together (they keep off each other)
        for d in detections:
            track = self.tracker.get(d.source_track)  # type: ignore[arg-type]
            if track is not None and replayable and d.mask.any():
                if d.source_track in job.lost and track.state == TrackState.LOST:
                    regained.append(d)
                    continue
                if d.source_track in then and track.mask is not None and track.id not in self.propagator.patched:
                    followed.append(d)
                    continue
            if track is not None and d.source_track in then:
                d = _moved(d, then[d.source_track], self._box_now(track, then[d.source_track]))
            carried.append(d)
        fresh = {j: d for j, (_, d) in enumerate(new) if d is not None}
        # Objects flow follows by their patch (small, without corners: MaskPropagator.patched)
        # move as they were followed since, not by the replay: their patch was matched on every
        # full-size frame, and on the replay's grey copies, shrunk and steps apart, it matches
        # look-alikes (the hard scene's small fast object, 25 px: followed by its first look for
        # 1.4 s, lost when its encode landed). Tracks go with the carried ones above; a new object
        # by its first look's move since the encoded frame.
        by_look = {}
        looked = {}  # new objects whose first look flow followed since the encoded frame: its move
        for j, d in fresh.items():
            tid = _reserved_id(new[j][0]) if new[j][0].track_id is None else None
            fl = self._first_looks.get(tid) if tid is not None else None
            if fl is not None and fl.followed and fl.start is not None and fl.start[0] == job.frame_index:
                looked[j] = (fl.start[1], fl.box)
                if tid in self.propagator.patched:
                    by_look[j] = looked[j]
        replay = {("new", j): (d.mask, d.box) for j, d in fresh.items() if d.mask.any() and j not in by_look}
        replay.update({("found", j): (d.mask, d.box) for j, d in enumerate(found) if d.mask.any()})
        replay.update({("track", j): (d.mask, d.box) for j, d in enumerate(followed)})
        # A track's whole size bounds what is filled in from the frame's edge as it comes into view.
        sizes = {("track", j): self.tracker.get(d.source_track).full_size for j, d in enumerate(followed)}  # type: ignore[union-attr]
        moved = self._replay(job.frame_index, replay, sizes)
        for k, d in enumerate(regained):
            # One at a time: a lost track's candidates (where it was expected, where the search
            # looked) may be one object, and masks replayed together keep off each other.
            size = self.tracker.get(d.source_track).full_size  # type: ignore[union-attr]
            moved.update(self._replay(job.frame_index, {("lost", k): (d.mask, d.box)}, {("lost", k): size}))

        def now(d: Detection, key) -> Detection:
            return _moved(d, d.box, moved[key][1], moved[key][0]) if key in moved else d

        # Replayed over the kept frames' grey copies, shrunk and steps apart, a mask can lose its
        # object (DAVIS horsejump-high bounced, live: the horse's mask stayed where it was 1.4 s
        # before). Where the move the object was followed by since disagrees, the move whose
        # pixels look more like the decoded object's is taken.
        fresh = {
            j: _moved(d, *by_look[j]) if j in by_look
            else self._likelier(now(d, ("new", j)), _moved(d, *looked[j])) if j in looked
            else now(d, ("new", j))
            for j, d in fresh.items()
        }
        for k, d in enumerate(regained):
            checked = self._looks_now(now(d, ("lost", k)))
            if checked is not None:  # None: the replay lost the object
                carried.append(checked)
        for k, d in enumerate(followed):
            track = self.tracker.get(d.source_track)  # type: ignore[arg-type]
            alt = _moved(d, then[d.source_track], self._box_now(track, then[d.source_track]))  # type: ignore[arg-type]
            # Moved as one piece, the mask has the object's shape of the encoded frame; the
            # encoded frame laid over this one, dense flow brings the shape up to date.
            carried.append(self._reshaped(d, self._likelier(now(d, ("track", k)), alt), job.image))
        if found:
            # Detections were decoded on the encoded frame too: replayed to this one like new prompts.
            found = [now(d, ("found", j)) for j, d in enumerate(found)]
            added = [j for j, (p, _) in enumerate(new) if p.track_id is None and j in fresh]
            found, kept = yield_to_prompts(found, [fresh[j] for j in added], self.tracker.config.match_iou_thresh)
            fresh.update(zip(added, kept))
        timings["propagate"] = timings.get("propagate", 0.0) + (time.perf_counter() - t) * 1e3

        t = time.perf_counter()
        refined = [fresh[j] for j, (p, _) in enumerate(new) if j in fresh and p.track_id is not None]
        self.tracker.update(carried + refined, frame_index, found, self._whole_masks())
        name_tracks(self.tracker.tracks(), found, self.tracker.config.match_iou_thresh)
        self._start_tracks([(p, fresh.get(j)) for j, (p, _) in enumerate(new)], frame_index)
        self._end_lost_looks(job.frame_index)
        self._update_order()
        timings["associate"] = timings.get("associate", 0.0) + (time.perf_counter() - t) * 1e3

    def _box_now(self, track, box_then) -> np.ndarray:
        """Where ``track`` is now, to move a mask decoded at ``box_then`` to (its box, or its
        predicted box when it has no mask; behind another object, ``box_then``'s size there)."""
        now = track.box if track.mask is not None else track.predicted_box
        if self._hidden.get(track.id, False):
            # Its visible box shrank behind another object, its size did not: move, don't scale.
            now = _same_size(box_then, now)
        return now

    def _likelier(self, replayed: Detection, followed: Detection) -> Detection:
        """Of two moves of one decoded mask to this frame, ``replayed`` (by flow over the kept
        frames) unless the two disagree (:func:`_disagree`) and ``followed``'s (box to box, as
        the track moved since) pixels look more like the decoded object than ``replayed``'s
        (colour histograms against the decode's, by ``_LIKELIER`` or more)."""
        image = self._prev_image  # this frame's (set by the propagation)
        ref = followed.appearance
        if image is None or ref is None or not followed.mask.any() or image.shape[:2] != followed.mask.shape:
            return replayed
        if not replayed.mask.any():
            return followed
        if not _disagree(replayed.box, followed.box):
            return replayed
        a = similarity(ref, appearance_of(image, replayed.mask))
        b = similarity(ref, appearance_of(image, followed.mask))
        return followed if b >= a + _LIKELIER else replayed

    def _reshaped(self, then: Detection, moved: Detection, image_then: np.ndarray | None) -> Detection:
        """``moved`` (``then``, decoded on ``image_then``, moved to this frame as one piece) with
        its shape brought up to date by :class:`~realtime_sam.tracking.reshape.Reshaper`, where
        that looks at least as much like the decoded object as ``moved`` does; else ``moved``.

        The logits (the next decode's mask prompt) follow the mask's box from the move's
        (translation and scale): the tracker takes them to lie at the box it is given
        (``Track.logits_box``), and left as moved they would be off by the reshape's correction.
        """
        image = self._prev_image  # this frame's (set by the propagation)
        ref = then.appearance
        if image is None or image_then is None or ref is None or image_then.shape != image.shape:
            return moved
        if moved.mask.shape != image.shape[:2]:
            return moved
        # None also for an empty mask, either one (nothing to align).
        mask = self._reshaper(image_then, then.mask, image, moved.mask)
        box = mask_to_box(mask) if mask is not None else None
        if mask is None or box is None:
            return moved
        # Over 1-1.5 s the flow can lose the object (DAVIS drift-chicane: a car in its own smoke,
        # J 0.15 -> 0.00 reshaped): kept only where it looks no less like the decode.
        if similarity(ref, appearance_of(image, mask)) < similarity(ref, appearance_of(image, moved.mask)):
            return moved
        logits = None if moved.logits is None else move_logits(moved.logits, moved.box, box, mask.shape)
        return dataclass_replace(moved, mask=mask, box=box, logits=logits)

    def _looks_now(self, d: Detection) -> Detection | None:
        """A lost track's mask found on an encoded frame and replayed to this one, checked on
        this frame's pixels under it: ``None`` when they do not look like the track (the
        replay lost the object), else with the looks of the frame, of the two, more like it.

        An object coming back into view was only partly in view on the encoded
        frame (hard scene: 0.60-0.62 alike, the search asks 0.65); replayed to
        the current frame, it may be whole (0.75). Where the replay lost it
        (a fast object at the frame's edge, replayed over 1.4 s), its mask
        now lies on something else: taken back, the track would follow that.
        """
        track = self.tracker.get(d.source_track)  # type: ignore[arg-type]
        image = self._prev_image  # this frame's (set by the propagation)
        if track is None or track.appearance is None or image is None or image.shape[:2] != d.mask.shape or not d.mask.any():
            return d
        looks = appearance_of(image, d.mask)
        now = similarity(track.appearance, looks)
        if now < self.tracker.config.min_appearance:
            return None
        return dataclass_replace(d, appearance=looks) if now > similarity(track.appearance, d.appearance) else d

    def _taken(self, size: tuple[int, ...]) -> np.ndarray | None:
        """``HxW bool``: what the tracks that are not lost cover now (their masks of frame size
        ``size``), or ``None`` when none does: where a lost object is not looked for."""
        taken = None
        for t in self.tracker.tracks():
            if t.state != TrackState.LOST and t.mask is not None and t.mask.shape == tuple(size):
                taken = t.mask.copy() if taken is None else taken | t.mask
        return taken

    def _whole_masks(self) -> dict[int, np.ndarray]:
        """``{track id: HxW bool}`` the whole (amodal) masks of tracks partly hidden behind
        others at the last propagation (dense flow), for :meth:`Tracker.update`."""
        hidden = [tid for tid, h in self._hidden.items() if h and tid in self._amodal]
        size = next((t.mask.shape for t in self.tracker.tracks() if t.mask is not None), None)
        if not hidden or size is None:
            return {}
        return {tid: logits_to_mask(self._amodal[tid], size) for tid in hidden}

    def _lost_ids(self, prompts: Sequence[TrackPrompt]) -> frozenset[int]:
        """The ids of the prompted tracks that are lost (their masks are replayed when an encode finds them)."""
        return frozenset(
            p.track_id for p in prompts if (tr := self.tracker.get(p.track_id)) is not None and tr.state == TrackState.LOST
        )

    def _update_order(self) -> None:
        """Who is in front, from the decode that just landed: where two tracks' moved
        masks overlapped, the one whose new mask took more of the overlap is in front.

        New tracks start in front (a user clicks what is visible); pairs whose
        masks did not overlap keep their order. A track behind another keeps
        the part of its moved mask that the one in front now covers: the
        decoder sees only its visible part, and without the hidden rest its
        mask could not grow back as it comes out.
        """
        alive = [t.id for t in self.tracker.tracks()]
        order = [tid for tid in self._order if tid in alive]
        order = [tid for tid in alive if tid not in order] + order
        before = {tid: lg > 0 for tid, lg in self._amodal.items()}
        if len(before) >= 2:
            now = {}
            for tid in before:
                t = self.tracker.get(tid)
                if t is not None and t.logits is not None and t.mask is not None:
                    now[tid] = t.logits > 0
            ids = [tid for tid in order if tid in now]
            for i, a in enumerate(ids):
                for b in ids[i + 1 :]:
                    both = before[a] & before[b]
                    if int(both.sum()) < 2:
                        continue
                    if int((now[b] & both).sum()) > int((now[a] & both).sum()):  # b won: b goes in front of a
                        order.remove(b)
                        order.insert(order.index(a), b)
            ids = [tid for tid in order if tid in now]
            for i, back in enumerate(ids):
                t = self.tracker.get(back)
                if t is None or t.logits_box is None:  # not decoded this time
                    continue
                hidden = np.zeros_like(before[back])
                for front in ids[:i]:
                    hidden |= before[back] & now[front]
                if hidden.any():
                    merged = t.logits.copy()  # type: ignore[union-attr]
                    merged[hidden] = np.maximum(merged[hidden], self._amodal[back][hidden])
                    t.logits = merged
        self._order = order
        self._amodal = {}

    def _replay(
        self, since: int, masks: dict[Hashable, tuple[np.ndarray, np.ndarray]], sizes: dict[Hashable, np.ndarray | None] | None = None
    ) -> dict:
        """Masks of frame ``since`` -> ``{key: (mask, box)}`` on the newest kept frame
        (``sizes``: objects' whole ``(w, h)`` where known, see :meth:`MaskPropagator.replay`).

        Empty when the frame ``since`` is no longer kept (the masks then stay as decoded).
        """
        frames = self.background.replay_frames(since) if masks else None
        if frames is None:
            return {}
        out = self.propagator.replay(frames, masks, sizes)
        return {k: (o.mask, o.box) for k, o in out.items()}

    def _apply_commands(self) -> None:
        with self._lock:
            commands, self._commands = self._commands, []
        for kind, arg in commands:
            if kind == "add":
                self._pending.append(arg)  # type: ignore[arg-type]
            elif kind == "remove":
                self.tracker.remove(arg)  # type: ignore[arg-type]
                # An object removed before its encode landed (e.g. by a click on its first look).
                self._first_looks.pop(arg, None)  # type: ignore[call-overload]
                self._pending = [p for p in self._pending if _reserved_id(p) != arg]
                self.background.withdraw(arg)  # type: ignore[arg-type]
            elif kind == "clear":
                self.tracker.clear()
                self._first_looks.clear()
                self._pending.clear()
                self.background.forget_new()
            elif kind == "auto":
                self._auto = bool(arg)
                self._since_discovery = None

    def _request(self, image: np.ndarray, live: Sequence[TrackPrompt], new: Sequence[ObjectPrompt]) -> _DecodeRequest:
        """What to decode against ``image``'s embedding, from the tracker's state now.

        Every track's prompt; each lost track's search (where it may plausibly
        be, :meth:`~realtime_sam.tracking.tracks.Tracker.search_region`: the
        near band first, then the rest); the new prompts, a refinement with
        its track's box and logits.
        """
        size = image.shape[:2]
        tracker = self.tracker
        looks: list[_Look] = []
        taken = None
        lost = [t for p in live if (t := tracker.get(p.track_id)) is not None and t.state == TrackState.LOST]
        lost = [t for t in lost if t.appearance is not None]
        if tracker.config.search_candidates > 0 and lost:
            taken = self._taken(tuple(size))
            for t in lost:
                region = tracker.search_region(t, tracker.frame)
                if region is None or region.shape != tuple(size):
                    continue
                # Where it is most likely first (an edge's band of one object size), then the rest
                # of where it may be: look-alikes farther off must not crowd out the near candidates.
                near = tracker.search_region(t, tracker.frame, grown=False)
                rings = (region,) if near is None or np.array_equal(near, region) else (near, region & ~near)
                extent = t.full_size if t.full_size is not None else t.mean[2:4]
                looks.append(_Look(t.id, rings, t.appearance, (float(extent[0]), float(extent[1])), tracker.left_view(t)))  # type: ignore[arg-type]
        refined = []
        for p in new:
            tr = tracker.get(p.track_id) if p.track_id is not None else None
            refined.append((p, None if tr is None else TrackPrompt(tr.id, tr.box, tr.logits)))
        anchors = {
            t.id: _Anchor(t.decoded_box.copy(), t.full_area, t.ref_area, t.appearance)
            for p in live
            if (t := tracker.get(p.track_id)) is not None and t.state != TrackState.LOST  # no flow moved a lost one's prompt
            and t.decoded_box is not None and t.full_area > 0 and not self._hidden.get(t.id, False)
        }
        return _DecodeRequest(image, tuple(live), tuple(looks), taken, tuple(refined), anchors)

    def _decode_call(
        self,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        mask_input: np.ndarray | None,
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The runner's ``decode``, its answer checked against :class:`ModelRunner` and made ``float32`` numpy.

        A runner may be the user's own: one whose answer has another shape would
        otherwise fail far from here (an ``IndexError`` in the engine, or in its own
        ``masks`` given what it returned), naming neither the runner nor the method.
        """
        n = len(boxes) if boxes is not None else len(points)  # type: ignore[arg-type]
        answer = self.runner.decode(points, labels, boxes, mask_input, multimask)
        name = f"{type(self.runner).__name__}.decode"
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            raise TypeError(f"{name} returned {type(answer).__name__}; expected a pair (low_res_logits, iou) (see realtime_sam.ModelRunner)")
        low = _runner_array(answer[0], name, "low-res logits")
        iou = _runner_array(answer[1], name, "IoU scores")
        if low.ndim != 4 or low.shape[0] != n or low.shape[1] < 1 or low.shape[2:] != (_LOWRES, _LOWRES) or iou.shape != low.shape[:2]:
            raise ValueError(
                f"{name} returned low-res logits of shape {tuple(low.shape)} and IoU scores of shape {tuple(iou.shape)} "
                f"for {n} prompts; expected ({n}, C, {_LOWRES}, {_LOWRES}) and ({n}, C) (see realtime_sam.ModelRunner)"
            )
        return low.astype(np.float32, copy=False), iou.astype(np.float32, copy=False)

    def _masks(self, low: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The runner's ``masks``, its answer checked against :class:`ModelRunner`: ``BxHxW bool`` numpy."""
        name = f"{type(self.runner).__name__}.masks"
        masks = _runner_array(self.runner.masks(low, size), name, "masks")
        expected = (len(low), int(size[0]), int(size[1]))
        # Float masks are refused, not cast: logits or probabilities would all turn True.
        if masks.shape != expected or not (masks.dtype == bool or np.issubdtype(masks.dtype, np.integer)):
            raise ValueError(
                f"{name} returned {masks.dtype} masks of shape {tuple(masks.shape)}; "
                f"expected {expected} bool (the logits thresholded at 0; see realtime_sam.ModelRunner)"
            )
        return masks.astype(bool, copy=False)

    def _decode(self, request: _DecodeRequest, boxes: BoxDetections | None = None) -> _Decoded:
        """Decode ``request`` (and a detector's ``boxes``) against the runner's current embedding.

        Reads only the runner and the settings: safe on the worker while the
        inference thread goes on.
        """
        image = request.image
        return _Decoded(
            self._decode_tracks(request.prompts, image, request.anchors),
            self._search(request, image),
            [(p, self._decode_prompt(p, refined, image)) for p, refined in request.new],
            self._decode_detections(boxes, image) if boxes is not None else [],
        )

    def _detections(
        self, low: np.ndarray, iou: np.ndarray, image: np.ndarray, sources: Sequence[int | None], labels=None, masks=None
    ) -> list[Detection]:
        """One detection per row of ``low`` (``Bx256x256``) decoded on ``image``; ``masks`` when already upsampled."""
        size = image.shape[:2]
        if masks is None:
            masks = self._masks(low, size)
        out = []
        for i, src in enumerate(sources):
            box = mask_to_box(masks[i])
            out.append(
                Detection(
                    mask=masks[i],
                    box=box if box is not None else (0.0, 0.0, 0.0, 0.0),
                    score=float(iou[i]),
                    logits=low[i],
                    source_track=src,
                    label=labels[i] if labels else None,
                    # Its looks are measured on the frame it was decoded on (a background encode's is older).
                    appearance=appearance_of(image, masks[i]),
                )
            )
        return out

    def _decode_boxes(
        self, boxes: np.ndarray, image: np.ndarray, sources: Sequence[int | None], *, mask_in: np.ndarray | None = None, labels=None
    ) -> list[Detection]:
        """Box prompts (``Bx4``; with ``mask_in``, ``Bx256x256`` mask prompts) in decoder calls of ``decode_batch``."""
        out: list[Detection] = []
        bs = self.config.decode_batch
        for i in range(0, len(boxes), bs):
            low, iou = self._decode_call(None, None, boxes[i : i + bs], None if mask_in is None else mask_in[i : i + bs], False)
            chunk_labels = None if labels is None else list(labels[i : i + bs])
            out += self._detections(low[:, 0], iou[:, 0], image, list(sources[i : i + bs]), chunk_labels)
        return out

    def _decode_tracks(self, live: Sequence[TrackPrompt], image: np.ndarray, anchors: Mapping[int, _Anchor]) -> list[Detection]:
        """All live tracks in batched decoder calls: box prompt (+ last logits as mask prompt);
        ``anchors`` (:meth:`_ask_again`): where the flow lost one, asked again."""
        with_logits = [p for p in live if self.config.mask_prompt and p.logits is not None]
        without = [p for p in live if not (self.config.mask_prompt and p.logits is not None)]
        out: list[Detection] = []
        for group, use_mask in ((with_logits, True), (without, False)):
            if group:
                boxes = np.array([p.box for p in group], dtype=np.float64).reshape(-1, 4)
                mask_in = np.stack([p.logits for p in group]).astype(np.float32) if use_mask else None
                out += self._decode_boxes(boxes, image, [p.track_id for p in group], mask_in=mask_in)
        return self._ask_again(live, self._beyond_the_box(live, out, image), image, anchors)

    def _ask_again(
        self, live: Sequence[TrackPrompt], decoded: list[Detection], image: np.ndarray, anchors: Mapping[int, _Anchor]
    ) -> list[Detection]:
        """``decoded`` (one per prompt of ``live``), where the flow had carried a track's mask
        off its object, decoded once more from where the object was last decoded.

        A track's prompt is the box of its propagated mask. Where the flow carried
        that mask off the object (a dog running as the camera pans with it: the flow
        inside the blurred dog is the background's), the box holds one end of the
        object and the decode gives that end, or the mask spread over the background
        and the decode gives a background region. Either way the track loses the
        object within a few frames (DAVIS libby). So, for the tracks in ``anchors``
        (live ones not partly hidden by another), with a box prompt alone (the logits
        are the drifted mask's):

        * a decode under :data:`_SHRUNK` of the track's last whole decoded area, not
          at the frame's edge (an object leaving), is asked again with the prompt box
          joined to the box of the track's last decode, where the object was when
          the model last saw it; the new mask must hold most of the first (the same
          object, more of it) and be nearer the object's size;
        * a decode larger than the object that the track would refuse (unlike it, or
          too large: :func:`~realtime_sam.tracking.tracks.plausible_mask`) is asked
          again at the last decoded box alone.

        Either way the new mask must be one the track takes, score about as well and
        take in no other track's mask. Reads only ``anchors`` of the engine's state:
        safe on the worker.
        """
        h, w = image.shape[:2]
        cfg = self.tracker.config  # frozen
        by_id = {p.track_id: p for p in live}
        redo: list[tuple[int, np.ndarray]] = []
        for k, d in enumerate(decoded):
            p = by_id.get(d.source_track)  # type: ignore[arg-type]
            a = anchors.get(d.source_track) if d.source_track is not None else None  # type: ignore[arg-type]
            if p is None or a is None:
                continue
            n = np.count_nonzero(d.mask)  # (d.box is its mask's box: _detections)
            if 0 < n < _SHRUNK * a.full_area and not any(box_edges(d.box, (h, w))):
                ask = np.concatenate([np.minimum(p.box[:2], a.decoded_box[:2]), np.maximum(p.box[2:], a.decoded_box[2:])])
                if box_area(ask) >= 1.2 * box_area(p.box):  # else the last decode lies inside the prompt: nothing new to ask
                    redo.append((k, np.clip(ask, 0, [w, h, w, h])))
            elif n > a.full_area and not plausible_mask(cfg, a.ref_area, a.looks, float(n), d.appearance):
                redo.append((k, np.clip(a.decoded_box, 0, [w, h, w, h])))
        if not redo:
            return decoded
        again = self._decode_boxes(np.stack([b for _, b in redo]), image, [decoded[k].source_track for k, _ in redo])
        out = list(decoded)
        for (k, _), d in zip(redo, again):
            a, first = anchors[d.source_track], decoded[k].mask  # type: ignore[index]
            n_first, n_new = np.count_nonzero(first), np.count_nonzero(d.mask)
            better = plausible_mask(cfg, a.ref_area, a.looks, float(n_new), d.appearance)
            if n_first < _SHRUNK * a.full_area:
                near = abs(n_new - a.full_area) < abs(n_first - a.full_area)
                better = better and near and np.count_nonzero(d.mask & first) >= 0.8 * n_first
            others = any(
                np.count_nonzero(d.mask & o.mask) > 0.2 * np.count_nonzero(o.mask)
                for j, o in enumerate(decoded) if j != k and o.source_track is not None and o.mask.any()
            )
            if better and not others and d.score >= decoded[k].score - 0.05:
                out[k] = d
        return out

    def _beyond_the_box(self, live: Sequence[TrackPrompt], decoded: list[Detection], image: np.ndarray) -> list[Detection]:
        """``decoded`` (one per prompt of ``live``), where a mask spills over its prompt box
        decoded once more with the box extended past that side.

        SAM segments what is in the box. An object that moved faster than the
        flow followed (a small fast object turning) lies partly beyond its
        propagated box, and the decode gives only the part inside: the track
        then shrinks onto a sliver and loses the object. Where a mask spills
        over a side of its box (:func:`_cut_sides`), the box is extended past
        that side by half its size and decoded again (one more decoder call,
        for those tracks only); the new mask is kept when it holds most of the
        first one (the same object, more of it) and scores about as well.
        """
        h, w = image.shape[:2]
        by_id = {p.track_id: p for p in live}
        redo: list[tuple[int, np.ndarray, TrackPrompt]] = []
        for k, d in enumerate(decoded):
            p = by_id.get(d.source_track)  # type: ignore[arg-type]
            if p is None or p.box is None or not d.mask.any():
                continue
            box = np.asarray(p.box, dtype=np.float64)
            grown = _cut_sides(d.mask, box, (h, w))
            if grown is not None:
                redo.append((k, grown, p))
        if not redo:
            return decoded
        boxes = np.stack([b for _, b, _ in redo])
        with_logits = self.config.mask_prompt and all(p.logits is not None for _, _, p in redo)
        mask_in = np.stack([p.logits for _, _, p in redo]).astype(np.float32) if with_logits else None
        again = self._decode_boxes(boxes, image, [p.track_id for _, _, p in redo], mask_in=mask_in)
        out = list(decoded)
        for (k, _, _), d in zip(redo, again):
            first = decoded[k].mask
            if d.score >= decoded[k].score - 0.05 and np.count_nonzero(d.mask & first) >= 0.8 * np.count_nonzero(first):
                out[k] = d
        return out

    def _search(self, request: _DecodeRequest, image: np.ndarray) -> list[Detection]:
        """Lost tracks looked for in ``image`` (the frame encoded): each look's
        ``tracker.search_candidates`` best boxes by looks within its rings,
        decoded as box prompts.

        The masks come back marked ``searched``: the tracker takes one back
        only when it looks like the track and covers no live track. Live
        tracks' masks are left out of the search (they are other objects).
        """
        count = self.tracker.config.search_candidates
        size = image.shape[:2]
        ids, boxes = [], []
        for look in request.looks:
            w, h = look.extent
            for ring in look.rings:
                outside = ~ring if request.taken is None else request.taken | ~ring
                for box in search_boxes(
                    image, look.appearance, look.extent, exclude=outside, count=count,
                    # Lost at an edge, it comes back partly out of view: score the window's part inside.
                    partly_out=ring is look.rings[0] and look.partly_out,
                ):
                    # Half as large again: the colour peak is seldom the object's centre, and a
                    # box holding only part of it would decode only that part.
                    c, half = (box[:2] + box[2:]) / 2.0, 0.75 * np.array([w, h], dtype=np.float64)
                    ids.append(look.track_id)
                    boxes.append(np.clip(np.concatenate([c - half, c + half]), 0, [size[1], size[0], size[1], size[0]]))
        out = self._decode_boxes(np.stack(boxes), image, ids) if boxes else []
        return [dataclass_replace(d, searched=True) for d in out]

    def _decode_detections(self, boxes: BoxDetections, image: np.ndarray) -> list[Detection]:
        """A detector's boxes in batched decoder calls (box prompts), labelled with their class names."""
        return self._decode_boxes(boxes.xyxy, image, [None] * len(boxes), labels=boxes.labels)

    def _decode_prompt(self, prompt: ObjectPrompt, refined: TrackPrompt | None, image: np.ndarray) -> Detection | None:
        """Decode one user prompt; a lone point uses multimask and keeps the best-scored mask.

        ``refined``: for a prompt that refines a track (``prompt.track_id``),
        that track's state when the encode started (``None``: it was gone;
        the prompt decodes to nothing). Points and the box are clamped into
        the frame first; a prompt whose box lies wholly outside this frame
        decodes to nothing (``None``).
        """
        size = image.shape[:2]
        try:
            prompt = clamp_prompt(prompt, size[1], size[0])
        except PromptError as exc:
            _log.warning("prompt dropped: %s", exc)
            return None
        pts = lbl = None
        if prompt.points:
            pts = np.asarray(prompt.points, dtype=np.float64).reshape(1, -1, 2)
            lbl = np.asarray(prompt.labels, dtype=np.int64).reshape(1, -1)
        box = np.asarray(prompt.box, dtype=np.float64).reshape(1, 4) if prompt.box is not None else None
        mask_in = None
        if prompt.track_id is not None:
            if refined is None:
                return None
            if box is None and refined.box is not None:
                box = np.asarray(refined.box, dtype=np.float64).reshape(1, 4)
            if refined.logits is not None:
                mask_in = refined.logits[None].astype(np.float32)
        multimask = self.config.multimask_single_point and box is None and pts is not None and pts.shape[1] == 1
        low, iou = self._decode_call(pts, lbl, box, mask_in, multimask)
        best = int(np.argmax(iou[0]))
        return self._detections(low[:, best], iou[:, best], image, [prompt.track_id], [prompt.label])[0]

    def _discover(self, image: np.ndarray) -> list[Detection]:
        """Auto mode: a point grid over the frame, SAM's quality filters, then NMS."""
        cfg = self.discovery_config
        size = h, w = image.shape[:2]
        grid = point_grid(cfg.points_per_side) * np.array([w, h], dtype=np.float64)
        lows, ious = [], []
        bs = max(1, cfg.batch_size)
        for i in range(0, len(grid), bs):
            chunk = grid[i : i + bs]
            low, iou = self._decode_call(chunk[:, None, :], np.ones((len(chunk), 1), np.int64), None, None, True)
            lows.append(low.reshape(-1, *low.shape[-2:]))
            ious.append(iou.reshape(-1))
        low = np.concatenate(lows)
        iou = np.concatenate(ious)
        # Cheap filters on the low-res logits first, so only survivors are upsampled.
        stab = np.asarray(stability_score(low, cfg.mask_threshold, cfg.stability_offset)).reshape(-1)
        pre = np.flatnonzero((iou >= cfg.pred_iou_thresh) & (stab >= cfg.stability_score_thresh))
        if len(pre) == 0:
            return []
        low, iou = low[pre], iou[pre]
        masks = self._masks(low, size)
        keep = filter_candidates(masks, iou, low, cfg)
        return self._detections(low[keep], iou[keep], image, [None] * len(keep), masks=masks[keep])


def _check_frame(frame: object) -> None:
    """Refuse what :meth:`Engine.process` cannot track on, before it changes any state.

    A grey (HxW) or BGRA (HxWx4) image was taken without a word and read as a change of
    frame size: every track was dropped. A float image failed half-way through the step,
    after the queued commands were applied.
    """
    if not isinstance(frame, Frame):
        raise ValueError(f"Engine.process takes a Frame(index, image, timestamp, capture_time), got {type(frame).__name__}")
    image = frame.image
    if not isinstance(image, np.ndarray):
        raise ValueError(f"frame {frame.index}: the image must be a numpy array (HxWx3 uint8 BGR), got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 and image.shape[0] >= 1 and image.shape[1] >= 1:
        return
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 4)):
        code = "COLOR_GRAY2BGR" if image.ndim == 2 or image.shape[2] == 1 else "COLOR_BGRA2BGR"
        todo = f"convert it first: cv2.cvtColor(image, cv2.{code})"
    elif image.dtype != np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        todo = "scale it to 0..255 and convert it first: image.astype(np.uint8)"
    else:
        todo = "give a decoded colour frame"
    shape = "x".join(str(n) for n in image.shape)
    raise ValueError(f"frame {frame.index}: the image must be HxWx3 uint8 BGR, got {shape} {image.dtype}; {todo}")


def _cut_sides(mask: np.ndarray, box: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """``box`` (``XYXY``) extended by half its size past each side that ``mask`` spills over,
    ``None`` when it spills over none.

    A mask spills over a side when it goes on beyond it: a 2 px strip starting
    ``max(2 px, 5 %)`` of the box's size outside that side holds the mask over a
    quarter of the side's length. (A decoded mask of an object its box holds
    touches the box's sides but hardly leaves them; SAM takes in a little of an
    object beyond its box, and that little says the object goes on.) Sides at
    the frame's edge are left as they are.
    """
    h, w = size
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    if bw < 4 or bh < 4:
        return None
    dx, dy = max(2, int(round(0.05 * bw))), max(2, int(round(0.05 * bh)))
    ix0, iy0, ix1, iy1 = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
    rows = slice(max(0, iy0), min(h, iy1))
    cols = slice(max(0, ix0), min(w, ix1))
    grown = np.array([x0, y0, x1, y1], dtype=np.float64)
    cut = False
    # (the strip outside the side, the side's length, the box coordinate it moves, by how
    # much, the axis across the strip's 2 px)
    sides = (
        (mask[rows, max(0, ix0 - dx - 2):max(0, ix0 - dx)], bh, 0, -0.5 * bw, 1),
        (mask[max(0, iy0 - dy - 2):max(0, iy0 - dy), cols], bw, 1, -0.5 * bh, 0),
        (mask[rows, min(w, ix1 + dx):min(w, ix1 + dx + 2)], bh, 2, 0.5 * bw, 1),
        (mask[min(h, iy1 + dy):min(h, iy1 + dy + 2), cols], bw, 3, 0.5 * bh, 0),
    )
    for strip, length, i, step, along in sides:
        if strip.size and np.count_nonzero(strip.any(axis=along)) >= 0.25 * length:
            grown[i] += step
            cut = True
    if not cut:
        return None
    return np.clip(grown, 0, [w, h, w, h])
