"""The per-frame tracking engine: encode every N frames, propagate, decode, associate.

One call of :meth:`Engine.process` turns a :class:`Frame` into a
:class:`FrameResult`. The engine knows nothing of threads; user commands
(add / remove / clear / auto) may come from any thread and are queued, then
applied at the start of the next ``process`` call.

Per frame::

    commands -> motion predict -> optical-flow propagation of every mask
      -> [re-encode due?] encode image, decode all tracks in one batched call
         (box prompt from the propagated mask, last low-res logits as mask
         prompt), decode new user prompts, discovery grid in auto mode
      -> Hungarian association + lifecycle (Tracker) -> FrameResult

With ``background_encode`` (and a worker lent by the
:class:`~realtime_sam.pipeline.Pipeline`), the periodic re-encode and the
encode for new prompts run on the worker instead, while frames keep flowing
on optical flow alone. When an embedding is ready, every track (and every
new prompt) is decoded against it, i.e. on the frame it was taken from; a
track's mask is carried to the current frame by the track's own motion since
(flow on every frame, coasting behind occluders), a new object's is replayed
by flow through the small grey copies of the frames since, which the engine
keeps while such an encode is in flight. Then they are associated as usual.
Discovery still encodes at once, on the current frame.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .association import mask_to_box
from .discovery import DiscoveryConfig, filter_candidates, point_grid, stability_score
from .errors import ConfigError, PromptError
from .prompts import clamp_prompt, validate_prompt
from .propagation import MaskPropagator, PropagationConfig, WorkFrame
from .tracks import Detection, IdCounter, Tracker, TrackerConfig, TrackPrompt
from .types import Frame, FrameResult, ObjectPrompt, TrackResult

if TYPE_CHECKING:
    from .config import Config

__all__ = ["EngineConfig", "Engine", "ModelRunner", "PredictorRunner", "low_res_to_masks"]

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
            :class:`~realtime_sam.pipeline.Pipeline` runs the engine), for the
            periodic re-encodes and for new prompts, while masks keep following
            the motion by optical flow; a finished encode's masks are moved to
            the current frame (by each track's motion since; a new object's by
            replaying flow through the frames since). Frames
            then never wait for the encoder: the way to live speed on a CPU,
            where one encode takes seconds (a new object appears when its
            encode lands, already where it is now).
    """

    reencode_every: int = 5
    mask_prompt: bool = True
    multimask_single_point: bool = True
    decode_batch: int = 32
    auto: bool = False
    max_tracks: int = 64
    background_encode: bool = False

    def __post_init__(self) -> None:
        if self.reencode_every < 1:
            raise ConfigError(f"engine.reencode_every must be >= 1, got {self.reencode_every}")
        if self.decode_batch < 1:
            raise ConfigError(f"engine.decode_batch must be >= 1, got {self.decode_batch}")
        if self.max_tracks < 1:
            raise ConfigError(f"engine.max_tracks must be >= 1, got {self.max_tracks}")


class ModelRunner(Protocol):
    """What the engine needs from a model: one image embedding at a time, batched decoding.

    Coordinates are source-image pixels; images are ``HxWx3 uint8`` BGR.
    """

    def encode(self, image_bgr: np.ndarray) -> None: ...

    def decode(
        self,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        mask_input: np.ndarray | None,
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``points BxNx2``, ``labels BxN``, ``boxes Bx4``, ``mask_input Bx256x256`` ->
        ``(low_res_logits BxCx256x256 float32, iou BxC)``."""
        ...

    def masks(self, low_res: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``Bx256x256`` logits -> ``BxHxW bool`` at ``size = (H, W)``."""
        ...

    # Runners that can embed an image without making it current may also offer
    # ``embed(image_bgr) -> embedding`` (safe to call from another thread while
    # the runner decodes) and ``use(embedding)`` (make it current); only those
    # support ``EngineConfig.background_encode``.


@dataclass(eq=False)
class _BackgroundJob:
    """An encode running on the worker: the frame it embeds, the tracks' prompts and new user prompts at that frame."""

    frame_index: int
    prompts: tuple[TrackPrompt, ...]
    future: Future
    new: list[ObjectPrompt] = field(default_factory=list)


# Flow copies of the frames since the oldest background encode (for the replay). At
# 30 fps that is 10 s, far beyond an encode's 1-3 s on a CPU; at the default 480 px
# work size a copy is about 170 KB.
_HISTORY_FRAMES = 300
# Replay through at most this many of those frames (evenly spaced): flow copes with a
# few frames' motion per step, and the replay then costs tens of milliseconds.
_REPLAY_STEPS = 12


def _moved(d: Detection, box_then, box_now, mask_now: np.ndarray | None = None) -> Detection:
    """A detection decoded on an earlier frame, moved to now.

    ``box_then`` -> ``box_now`` define a translation and a uniform scale,
    applied to the low-res logits (the next mask prompt) and, unless
    ``mask_now`` (the mask replayed by flow) is given, to the mask.
    """
    b0, b1 = np.asarray(box_then, dtype=np.float64), np.asarray(box_now, dtype=np.float64)
    w0, h0 = max(b0[2] - b0[0], 1.0), max(b0[3] - b0[1], 1.0)
    w1, h1 = max(b1[2] - b1[0], 1.0), max(b1[3] - b1[1], 1.0)
    scale = float(np.clip(math.sqrt((w1 * h1) / (w0 * h0)), 0.5, 2.0))
    c0 = ((b0[0] + b0[2]) / 2.0, (b0[1] + b0[3]) / 2.0)
    c1 = ((b1[0] + b1[2]) / 2.0, (b1[1] + b1[3]) / 2.0)
    if abs(c1[0] - c0[0]) < 0.5 and abs(c1[1] - c0[1]) < 0.5 and abs(scale - 1.0) < 1e-3 and mask_now is None:
        return d
    h, w = d.mask.shape
    m = np.array([[scale, 0.0, c1[0] - scale * c0[0]], [0.0, scale, c1[1] - scale * c0[1]]])
    if mask_now is None:
        mask_now = cv2.warpAffine(d.mask.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
    logits = d.logits
    if logits is not None:
        # Low-res logits cover the padded square of side max(H, W).
        k = logits.shape[-1] / float(max(h, w))
        ml = np.array([[scale, 0.0, m[0, 2] * k], [0.0, scale, m[1, 2] * k]])
        fill = float(min(logits.min(), -10.0))
        logits = cv2.warpAffine(
            logits, ml, logits.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill
        )
    box = mask_to_box(mask_now)
    return Detection(
        mask=mask_now, box=box if box is not None else (0.0, 0.0, 0.0, 0.0), score=d.score, logits=logits,
        source_track=d.source_track, label=d.label,
    )


class PredictorRunner:
    """:class:`ModelRunner` over a :class:`~realtime_sam.predictor.SamPredictor`."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor

    def encode(self, image_bgr: np.ndarray) -> None:
        self.predictor.set_image(image_bgr, image_format="BGR")

    @torch.no_grad()
    def decode(self, points, labels, boxes, mask_input, multimask):
        p = self.predictor
        dev = p.device
        pts = None
        if points is not None:
            coords = p.transform.apply_coords(np.asarray(points, dtype=np.float64), p.original_size)
            pts = (
                torch.as_tensor(coords, dtype=torch.float32, device=dev),
                torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=dev),
            )
        bx = None
        if boxes is not None:
            bx = torch.as_tensor(p.transform.apply_boxes(np.asarray(boxes), p.original_size), dtype=torch.float32, device=dev)
        mi = None
        if mask_input is not None:
            mi = torch.as_tensor(np.asarray(mask_input, dtype=np.float32), device=dev)[:, None]
        low, iou = p.decode(pts, bx, mi, multimask)
        return low.cpu().numpy(), iou.cpu().numpy()

    def masks(self, low_res: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        p = self.predictor
        return low_res_to_masks(low_res, p.input_size, p.model.img_size, size)


@torch.inference_mode()
def low_res_to_masks(
    low_res: np.ndarray, input_size: tuple[int, int], img_size: int, size: tuple[int, int]
) -> np.ndarray:
    """Decoder logits ``Bx256x256`` -> ``BxHxW bool`` masks at ``size = (H, W)``.

    ``input_size`` is the image's ``(h, w)`` inside the padded ``img_size``
    square. The padding is cropped at low resolution and the rest upsampled
    straight to the source size: one interpolation of the visible region
    instead of SAM's 1024x1024 round trip (the same masks up to sub-pixel
    edges, at a fraction of the cost for a 640x480 frame).
    """
    if len(low_res) == 0:
        return np.zeros((0, *size), dtype=bool)
    scale = low_res.shape[-1] / img_size
    h = int(np.ceil(input_size[0] * scale))
    w = int(np.ceil(input_size[1] * scale))
    t = torch.from_numpy(np.ascontiguousarray(low_res[:, None, :h, :w], dtype=np.float32))
    up = F.interpolate(t, size, mode="bilinear", align_corners=False)
    return (up[:, 0] > 0).numpy()


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
    ) -> None:
        self.runner = runner
        self.config = config
        self.discovery_config = discovery_config
        self.tracker = Tracker(tracker_config, ids or IdCounter())
        self.propagator = MaskPropagator(propagation_config)
        self._lock = threading.Lock()
        self._commands: list[tuple[str, object]] = []
        self._pending: list[ObjectPrompt] = []
        self._auto = config.auto
        self._prev_image: np.ndarray | None = None
        self._since_encode: int | None = None
        self._since_discovery: int | None = None
        self._last_tracks: tuple[TrackResult, ...] = ()
        self.last_encode_index: int | None = None
        self._submit: Callable[..., Future] | None = None
        self._jobs: deque[_BackgroundJob] = deque()  # in submission order; the worker runs them in order
        self._history: deque[tuple[int, WorkFrame]] = deque(maxlen=_HISTORY_FRAMES)

    @classmethod
    def from_config(cls, config: "Config", *, progress: bool = True) -> "Engine":
        """Load the model named by ``config.model`` (downloading weights if needed) and build an engine."""
        from .loader import load_runner

        runner = load_runner(config.model, progress=progress)
        return cls(
            runner,
            config.engine,
            tracker_config=config.tracker,
            propagation_config=config.propagation,
            discovery_config=config.discovery,
        )

    # -- background encoding (called by the Pipeline) -----------------------------------

    @property
    def wants_worker(self) -> bool:
        """True when ``background_encode`` is on and the runner can embed off-thread."""
        return self.config.background_encode and callable(getattr(self.runner, "embed", None))

    def attach_worker(self, submit: Callable[..., Future] | None) -> None:
        """Lend the engine a worker: ``submit(fn, *args) -> Future`` runs ``fn`` on another thread.

        ``None`` takes it back; an encode still running is then forgotten (its
        new prompts are kept and encode on the next frame).
        """
        self._submit = submit
        if submit is None:
            self._drop_jobs()

    # -- commands (any thread) ---------------------------------------------------------

    def add_object(self, prompt: ObjectPrompt) -> None:
        """Queue a new object (or a refinement when ``prompt.track_id`` is set).

        The prompt is checked by :func:`~realtime_sam.prompts.validate_prompt`
        (finite coordinates, 0/1 labels, no inverted or zero-area box, a box
        or a label-1 point). Points and boxes outside the frame are clamped
        into it when decoded; once a frame has been seen, a box lying wholly
        outside it is refused here.

        Raises:
            PromptError: the prompt breaks one of those rules.
        """
        if not prompt.points and prompt.box is None:
            raise PromptError("a prompt needs at least one point or a box")
        if len(prompt.points) != len(prompt.labels):
            raise PromptError(f"{len(prompt.points)} points but {len(prompt.labels)} labels; give one label per point")
        prompt = validate_prompt(prompt)
        prev = self._prev_image
        if prev is not None:
            # Fail at the call (a clear error to the user) rather than drop it later.
            clamp_prompt(prompt, int(prev.shape[1]), int(prev.shape[0]))
        with self._lock:
            self._commands.append(("add", prompt))

    def remove_object(self, track_id: int) -> None:
        with self._lock:
            self._commands.append(("remove", int(track_id)))

    def clear(self) -> None:
        with self._lock:
            self._commands.append(("clear", None))

    def set_auto(self, enabled: bool) -> None:
        with self._lock:
            self._commands.append(("auto", bool(enabled)))

    @property
    def auto(self) -> bool:
        return self._auto

    @property
    def has_pending(self) -> bool:
        """True when commands are queued or new prompts wait for a background encode."""
        with self._lock:
            # A window's thread asks while the inference thread changes the deque:
            # tuple() copies it in one step (no Python code runs in between).
            return bool(self._commands) or any(j.new for j in tuple(self._jobs))

    def track_at(self, x: float, y: float) -> int | None:
        """The id of the object under pixel ``(x, y)`` in the last result (topmost = highest id)."""
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        xi, yi = int(x), int(y)
        for t in sorted(self._last_tracks, key=lambda t: -t.track_id):
            m = t.mask
            if 0 <= yi < m.shape[0] and 0 <= xi < m.shape[1] and m[yi, xi]:
                return t.track_id
        for t in self._last_tracks:
            x0, y0, x1, y1 = t.box
            if x0 <= x <= x1 and y0 <= y <= y1:
                return t.track_id
        return None

    # -- the frame loop ----------------------------------------------------------------

    def process(self, frame: Frame) -> FrameResult:
        """Advance every track to ``frame`` and return what is visible in it."""
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        self._apply_commands()
        h, w = frame.height, frame.width
        tracker = self.tracker
        if self._prev_image is not None and self._prev_image.shape != frame.image.shape:
            # The stream changed resolution (e.g. an RTSP renegotiation): masks of
            # the old size cannot be matched against new ones, so start over.
            _log.warning(
                "frame size changed from %dx%d to %dx%d at frame %d; dropping %d track(s)",
                self._prev_image.shape[1], self._prev_image.shape[0], w, h, frame.index, len(tracker),
            )
            tracker.clear()
            self.propagator.reset()
            self._since_encode = None
            self._drop_jobs()
        tracker.predict(frame.index)

        if self._prev_image is not None and self._prev_image.shape == frame.image.shape and tracker.tracks():
            t = time.perf_counter()
            items = {tr.id: (tr.mask, tr.box) for tr in tracker.tracks() if tr.mask is not None and tr.mask.any()}
            if items:
                for tid, (mask, box, ok) in self.propagator.step(self._prev_image, frame.image, items).items():
                    if ok:
                        tracker.apply_propagation(tid, mask, box, frame.index)
                    else:
                        tracker.coast(tid, frame.index)
            timings["propagate"] = (time.perf_counter() - t) * 1e3
        self._prev_image = frame.image
        background = self._submit is not None and self.wants_worker

        due = [p for p in self._pending if p.start_frame <= frame.index]
        self._pending = [p for p in self._pending if p.start_frame > frame.index]
        live = tracker.prompts()
        discovery_due = self._auto and (
            self._since_discovery is None or self._since_discovery + 1 >= self.discovery_config.every_k_frames
        )
        periodic = bool(live) and (self._since_encode is None or self._since_encode + 1 >= self.config.reencode_every)
        # New prompts go to the worker too, unless discovery encodes this frame anyway.
        later = due if background and not discovery_due else []
        if later:
            due = []
        if later or any(job.new for job in self._jobs):
            # New prompts' masks are replayed from their encoded frame to the current one.
            self._history.append((frame.index, self.propagator.work(frame.image).detached()))
        encode = bool(due) or discovery_due or (periodic and not background)

        if encode and self._jobs:
            # The runner holds one image at a time and this encode is newer: let the
            # background ones finish (errors still surface); those with new prompts
            # land first, the others are dropped (this encode refreshes every track).
            while self._jobs:
                job = self._jobs.popleft()
                job.future.result()
                if job.new:
                    self._land(job, frame.index, (h, w), timings)

        if encode:
            t = time.perf_counter()
            self.runner.encode(frame.image)
            timings["encode"] = (time.perf_counter() - t) * 1e3
            self._since_encode = 0
            self.last_encode_index = frame.index
            t = time.perf_counter()
            detections = self._decode_tracks(live, (h, w))
            new_objects = [(p, self._decode_prompt(p, (h, w))) for p in due]
            timings["decode"] = (time.perf_counter() - t) * 1e3
            candidates: list[Detection] = []
            if discovery_due:
                t = time.perf_counter()
                candidates = self._discover((h, w))
                self._since_discovery = 0
                timings["discover"] = (time.perf_counter() - t) * 1e3
            elif self._since_discovery is not None:
                self._since_discovery += 1
            t = time.perf_counter()
            refined = [d for p, d in new_objects if p.track_id is not None and d is not None]
            tracker.update(detections + refined, frame.index, candidates)
            for p, d in new_objects:
                if p.track_id is None and d is not None and len(tracker.tracks()) < self.config.max_tracks:
                    tracker.add(d, frame.index)
            timings["associate"] = (time.perf_counter() - t) * 1e3
        else:
            if self._since_encode is not None:
                self._since_encode += 1
            if self._since_discovery is not None:
                self._since_discovery += 1
            if background:
                while self._jobs and self._jobs[0].future.done():
                    self._land(self._jobs.popleft(), frame.index, (h, w), timings)
                    encode = True
                    live = tracker.prompts()  # the corrected tracks prompt the next encode
                if later or (not self._jobs and periodic and live):
                    job = _BackgroundJob(frame.index, tuple(live), self._submit(self.runner.embed, frame.image), later)
                    self._jobs.append(job)
                    self._since_encode = 0
        # Only new prompts are replayed (tracks move by their own motion): keep the
        # frames since the oldest encode that carries some.
        waiting = [j.frame_index for j in self._jobs if j.new]
        if waiting:
            while self._history and self._history[0][0] < waiting[0]:
                self._history.popleft()
        else:
            self._history.clear()

        tracks = tracker.results(frame.index)
        self._last_tracks = tracks
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return FrameResult(frame=frame, tracks=tracks, encoded=encode, timings=timings)

    # -- internals ---------------------------------------------------------------------

    def _drop_jobs(self) -> None:
        """Forget the encodes in flight; their new prompts go back to the queue (they encode next frame)."""
        for job in self._jobs:
            self._pending.extend(job.new)
        self._jobs.clear()
        self._history.clear()

    def _land(self, job: _BackgroundJob, frame_index: int, size: tuple[int, int], timings: dict[str, float]) -> None:
        """Decode against a finished background embedding, move the masks to this frame, associate.

        Re-raises the worker's error.
        """
        self.runner.use(job.future.result())  # type: ignore[attr-defined]
        self.last_encode_index = job.frame_index
        t = time.perf_counter()
        prompts = [p for p in job.prompts if self.tracker.get(p.track_id) is not None]  # removed since: dropped
        detections = self._decode_tracks(prompts, size)
        new = [(p, self._decode_prompt(p, size)) for p in job.new]
        timings["decode"] = timings.get("decode", 0.0) + (time.perf_counter() - t) * 1e3

        t = time.perf_counter()
        # Tracks: moved by their own motion since (flow on every frame, coasting
        # behind occluders); new objects have none yet: replayed through the kept frames.
        then = {p.track_id: p.box for p in prompts}
        carried = []
        for d in detections:
            track = self.tracker.get(d.source_track)  # type: ignore[arg-type]
            if track is not None and d.source_track in then:
                d = _moved(d, then[d.source_track], track.box if track.mask is not None else track.predicted_box)
            carried.append(d)
        fresh = {j: d for j, (_, d) in enumerate(new) if d is not None}
        moved = self._replay(job.frame_index, {j: (d.mask, d.box) for j, d in fresh.items() if d.mask.any()})
        fresh = {j: _moved(d, d.box, moved[j][1], moved[j][0]) if j in moved else d for j, d in fresh.items()}
        timings["propagate"] = timings.get("propagate", 0.0) + (time.perf_counter() - t) * 1e3

        t = time.perf_counter()
        refined = [fresh[j] for j, (p, _) in enumerate(new) if j in fresh and p.track_id is not None]
        self.tracker.update(carried + refined, frame_index)
        for j, (p, _) in enumerate(new):
            if p.track_id is None and j in fresh and len(self.tracker.tracks()) < self.config.max_tracks:
                self.tracker.add(fresh[j], frame_index)
        timings["associate"] = timings.get("associate", 0.0) + (time.perf_counter() - t) * 1e3

    def _replay(self, since: int, masks: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict:
        """Masks of frame ``since`` -> ``{key: (mask, box)}`` on the newest kept frame.

        Empty when the frame ``since`` is no longer kept (the masks then stay as decoded).
        """
        if not masks or not self._history or self._history[0][0] > since:
            return {}
        frames = [w for i, w in self._history if i >= since]
        if len(frames) > _REPLAY_STEPS + 1:
            picks = np.unique(np.linspace(0, len(frames) - 1, _REPLAY_STEPS + 1).round().astype(int))
            frames = [frames[i] for i in picks]
        out = self.propagator.replay(frames, masks)
        return {k: (o.mask, o.box) for k, o in out.items()}

    def _apply_commands(self) -> None:
        with self._lock:
            commands, self._commands = self._commands, []
        for kind, arg in commands:
            if kind == "add":
                self._pending.append(arg)  # type: ignore[arg-type]
            elif kind == "remove":
                self.tracker.remove(arg)  # type: ignore[arg-type]
            elif kind == "clear":
                self.tracker.clear()
                self._pending.clear()
                for job in self._jobs:
                    job.new.clear()
            elif kind == "auto":
                self._auto = bool(arg)
                self._since_discovery = None

    def _detections(
        self, low: np.ndarray, iou: np.ndarray, size, sources: Sequence[int | None], labels=None, masks=None
    ) -> list[Detection]:
        """One detection per row of ``low`` (``Bx256x256``); ``masks`` when already upsampled."""
        if masks is None:
            masks = self.runner.masks(low, size)
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
                )
            )
        return out

    def _decode_tracks(self, live, size) -> list[Detection]:
        """All live tracks in batched decoder calls: box prompt (+ last logits as mask prompt)."""
        if not live:
            return []
        with_logits = [p for p in live if self.config.mask_prompt and p.logits is not None]
        without = [p for p in live if not (self.config.mask_prompt and p.logits is not None)]
        out: list[Detection] = []
        bs = self.config.decode_batch
        for group, use_mask in ((with_logits, True), (without, False)):
            for i in range(0, len(group), bs):
                chunk = group[i : i + bs]
                boxes = np.array([p.box for p in chunk], dtype=np.float64).reshape(-1, 4)
                mask_in = np.stack([p.logits for p in chunk]).astype(np.float32) if use_mask else None
                low, iou = self.runner.decode(None, None, boxes, mask_in, False)
                out += self._detections(low[:, 0], iou[:, 0], size, [p.track_id for p in chunk])
        return out

    def _decode_prompt(self, prompt: ObjectPrompt, size) -> Detection | None:
        """Decode one user prompt; a lone point uses multimask and keeps the best-scored mask.

        Points and the box are clamped into the frame first; a prompt whose box
        lies wholly outside this frame decodes to nothing (``None``).
        """
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
            tr = self.tracker.get(prompt.track_id)
            if tr is None:
                return None
            if box is None and tr.box is not None:
                box = np.asarray(tr.box, dtype=np.float64).reshape(1, 4)
            if tr.logits is not None:
                mask_in = tr.logits[None].astype(np.float32)
        multimask = self.config.multimask_single_point and box is None and pts is not None and pts.shape[1] == 1
        low, iou = self.runner.decode(pts, lbl, box, mask_in, multimask)
        best = int(np.argmax(iou[0]))
        return self._detections(low[:, best], iou[:, best], size, [prompt.track_id], [prompt.label])[0]

    def _discover(self, size) -> list[Detection]:
        """Auto mode: a point grid over the frame, SAM's quality filters, then NMS."""
        cfg = self.discovery_config
        h, w = size
        grid = point_grid(cfg.points_per_side) * np.array([w, h], dtype=np.float64)
        lows, ious = [], []
        bs = max(1, cfg.batch_size)
        for i in range(0, len(grid), bs):
            chunk = grid[i : i + bs]
            low, iou = self.runner.decode(chunk[:, None, :], np.ones((len(chunk), 1), np.int64), None, None, True)
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
        masks = self.runner.masks(low, size)
        keep = filter_candidates(masks, iou, low, cfg)
        return self._detections(low[keep], iou[keep], size, [None] * len(keep), masks=masks[keep])
