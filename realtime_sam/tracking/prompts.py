"""Initial prompts: parse and check the objects a run starts with.

Where they come from and how they group into objects:

* ``--box x0,y0,x1,y1`` (repeatable): each box is **one object**;
* ``--point x,y[,label]`` (repeatable): **all** points together form **one**
  object (``label`` 1 = on the object, the default; 0 = not on it). To give
  several point-prompted objects, or a box refined by points, use a file;
* ``--prompts FILE`` (YAML or JSON): a list of objects, each a mapping with
  ``points: [[x, y], ...]``, ``labels: [1, 0, ...]`` (default: all 1),
  ``box: [x0, y0, x1, y1]``, ``label: "name"`` and ``start_frame: N``
  (default 0). A mapping ``{objects: [...]}`` is accepted too. A key given
  twice in one object is refused, naming both lines, as in config files.

Objects from a file come first, then one per ``--box``, then the points.

Rules (each broken rule is a :class:`~realtime_sam.errors.PromptError` whose
one line says what to fix):

* coordinates are finite numbers with magnitude at most :data:`MAX_COORD`;
* a box is ``XYXY`` with ``x1 > x0`` and ``y1 > y0`` (inverted or zero-area
  boxes are rejected rather than guessed at);
* labels are 0 or 1, one per point, and an object needs a box or at least one
  label-1 point;
* ``start_frame`` is an integer >= 0.

Points and boxes outside the frame are legal here because the frame size is
not known yet; :func:`clamp_prompt` later clamps them into the frame, and
rejects a box that lies entirely outside it.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from realtime_sam.errors import PromptError
from realtime_sam.types import Box, ObjectPrompt
from realtime_sam.yaml_loader import UniqueKeyLoader, base_60_hint, integer_in_text, number_in_text, yes_no_hint

__all__ = [
    "MAX_COORD",
    "PROMPT_FIELDS",
    "parse_box",
    "parse_point",
    "points_prompt",
    "prompt_from_mapping",
    "load_prompts_file",
    "prompts_from_args",
    "validate_prompt",
    "clamp_prompt",
    "clamp_initial_prompt",
    "check_start_frame",
    "described",
    "short_repr",
    "validate_prompts",
]

MAX_COORD = 100_000.0
"""Largest accepted coordinate magnitude in pixels (far beyond any real frame;
larger values are almost certainly a typo or a unit mix-up)."""

PROMPT_FIELDS: tuple[str, ...] = ("points", "labels", "box", "label", "start_frame")
"""The keys an object in a prompts file may have."""

_MAX_FILE_BYTES = 10_000_000


def _number(value: Any, what: str) -> float:
    """A finite coordinate within ``MAX_COORD`` from a number or numeric text."""
    if isinstance(value, bool):  # bool is an int subclass; true/false in YAML is a mistake
        raise PromptError(f"{what} must be a number, got {value!r}")
    if isinstance(value, str):
        # A quoted number ("12.5"), read as config keys read one.
        text_number = number_in_text(value)
        if text_number is None:
            raise PromptError(f"{what} must be a number, got {value!r}{base_60_hint(value)}")
        number = text_number
    elif isinstance(value, numbers.Real):  # numpy's numbers too (a box from a detector's array)
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            raise PromptError(f"{what} is too large ({value!r}); coordinates are pixels within ±{MAX_COORD:g}") from None
    else:
        raise PromptError(f"{what} must be a number, got {type(value).__name__} {short_repr(value)}")
    if not math.isfinite(number):
        raise PromptError(f"{what} must be a finite number, got {value!r}")
    if abs(number) > MAX_COORD:
        raise PromptError(f"{what} is too large ({number:g}); coordinates are pixels within ±{MAX_COORD:g}")
    return number


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters: a refused value as an error message quotes it."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_box(box: Sequence[float], what: str) -> Box:
    x0, y0, x1, y1 = box
    if x1 < x0 or y1 < y0:
        raise PromptError(
            f"{what} ({x0:g},{y0:g},{x1:g},{y1:g}) is inverted; give x0,y0,x1,y1 with the top-left corner first"
        )
    if x1 == x0 or y1 == y0:
        raise PromptError(f"{what} ({x0:g},{y0:g},{x1:g},{y1:g}) has zero area; give x0,y0,x1,y1 with x1 > x0 and y1 > y0")
    return (x0, y0, x1, y1)


def _label_value(value: Any, what: str) -> int:
    number = integer_in_text(value) if isinstance(value, str) else value  # "1" quoted, as an integer key reads it
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or number not in (0, 1):
        raise PromptError(f"{what} must be 1 (on the object) or 0 (not on it), got {short_repr(value)}")
    return int(number)


def parse_box(text: str) -> Box:
    """Parse ``"x0,y0,x1,y1"`` (pixels, top-left then bottom-right) into an ``XYXY`` box.

    Raises:
        PromptError: not four numbers, a non-finite or huge number, or an
            inverted or zero-area box.
    """
    parts = str(text).split(",")
    if len(parts) != 4:
        raise PromptError(f"--box expects x0,y0,x1,y1 (four numbers), got {short_repr(text)}")
    values = [_number(p, f"--box value {i + 1}") for i, p in enumerate(parts)]
    return _check_box(values, f"--box {text.strip()}")


def parse_point(text: str) -> tuple[float, float, int]:
    """Parse ``"x,y"`` or ``"x,y,label"`` into ``(x, y, label)``; label 1 (default) or 0.

    Raises:
        PromptError: wrong number of fields, a bad number, or a label other than 0/1.
    """
    parts = str(text).split(",")
    if len(parts) not in (2, 3):
        raise PromptError(f"--point expects x,y or x,y,label (label 1 = object, 0 = not object), got {short_repr(text)}")
    x = _number(parts[0], "--point x")
    y = _number(parts[1], "--point y")
    label = 1
    if len(parts) == 3:
        raw = parts[2].strip()
        if raw not in ("0", "1"):
            raise PromptError(f"--point label must be 1 (on the object) or 0 (not on it), got {short_repr(raw)}")
        label = int(raw)
    return (x, y, label)


def validate_prompts(prompts: Any, what: str = "prompts", *, name_each: bool = False) -> list[ObjectPrompt]:
    """Each of ``prompts`` checked by :func:`validate_prompt`: a list (or any iterable) of them,
    each named ``prompt`` in an error (``what[k]`` with ``name_each``).

    Raises:
        PromptError: ``prompts`` is one prompt or not a list (a raw ``TypeError``, "not
            iterable", before), or one of them breaks the rules.
    """
    if isinstance(prompts, ObjectPrompt):
        raise PromptError(f"{what} takes a list of ObjectPrompt; got one: give {what}=[ObjectPrompt(...)]")
    if isinstance(prompts, (str, bytes, Mapping)) or not isinstance(prompts, Iterable):
        raise PromptError(f"{what} takes a list of ObjectPrompt, e.g. [ObjectPrompt(box=(x0, y0, x1, y1))]; got {type(prompts).__name__} {short_repr(prompts)}")
    return [validate_prompt(p, f"{what}[{k}]" if name_each else "prompt") for k, p in enumerate(prompts)]


def validate_prompt(prompt: ObjectPrompt, what: str = "prompt") -> ObjectPrompt:
    """Check an :class:`ObjectPrompt` built elsewhere (e.g. from a click) against the rules above.

    Its tuples may be lists or numpy arrays and its numbers numpy's. Returns the prompt
    with tuples of floats for coordinates, ints for labels, ``start_frame`` and ``track_id``.
    """
    if not isinstance(prompt, ObjectPrompt):
        raise PromptError(
            f"{what} must be an ObjectPrompt, e.g. ObjectPrompt(box=(x0, y0, x1, y1)); got {type(prompt).__name__} "
            f"{short_repr(prompt)}"
        )
    raw_points = _values(prompt.points, f"{what}: points", "((x, y), ...)")
    raw_labels = _values(prompt.labels, f"{what}: labels", "(1, 0, ...), one per point")
    points = tuple(_point(p, f"{what}: point {i + 1}") for i, p in enumerate(raw_points))
    if len(raw_points) != len(raw_labels):
        raise PromptError(f"{what}: {len(raw_points)} points but {len(raw_labels)} labels; give one label per point")
    labels = tuple(_label_value(v, f"{what}: label {i + 1}") for i, v in enumerate(raw_labels))
    box = None
    if prompt.box is not None:
        values = _values(prompt.box, f"{what}: box", "(x0, y0, x1, y1)")
        if len(values) != 4:
            raise PromptError(f"{what}: box must be (x0, y0, x1, y1), four numbers; got {len(values)}: {short_repr(prompt.box)}")
        box = _check_box([_number(v, f"{what}: box value {i + 1}") for i, v in enumerate(values)], f"{what}: box")
    track_id = prompt.track_id
    if track_id is not None:
        if isinstance(track_id, bool) or not isinstance(track_id, numbers.Integral) or track_id < 1:
            raise PromptError(
                f"{what}: track_id must be a track's id (an integer >= 1, from add_object or a result), "
                f"got {short_repr(track_id)}"
            )
        track_id = int(track_id)
    if not points and box is None:
        raise PromptError(f"{what} needs at least one point or a box")
    if box is None and 1 not in labels and track_id is None:
        raise PromptError(f"{what} needs a box or at least one point with label 1 (points with label 0 only exclude areas)")
    start_frame = prompt.start_frame
    if isinstance(start_frame, bool) or not isinstance(start_frame, numbers.Integral) or start_frame < 0:
        raise PromptError(f"{what}: start_frame must be an integer >= 0, got {short_repr(prompt.start_frame)}")
    if prompt.label is not None and not isinstance(prompt.label, str):
        raise PromptError(f"{what}: label must be text, got {short_repr(prompt.label)}")
    return ObjectPrompt(
        points=points,
        labels=labels,
        box=box,
        label=prompt.label,
        start_frame=int(start_frame),
        track_id=track_id,
    )


def _values(value: Any, what: str, form: str) -> list[Any]:
    """The items of a prompt's tuple (a list or a numpy array will do), or a one-line error giving ``form``."""
    if isinstance(value, (str, bytes, Mapping)):
        raise PromptError(f"{what} must be {form}, got {short_repr(value)}")
    try:
        return list(value)
    except TypeError:
        raise PromptError(f"{what} must be {form}, got {short_repr(value)}") from None


def _point(value: Any, what: str) -> tuple[float, float]:
    xy = _values(value, what, "(x, y)")
    if len(xy) != 2:
        raise PromptError(f"{what} must be (x, y), two numbers; got {short_repr(value)}")
    return (_number(xy[0], f"{what} x"), _number(xy[1], f"{what} y"))


def points_prompt(points: Iterable[tuple[float, float, int]]) -> ObjectPrompt | None:
    """Join ``(x, y, label)`` triples (from :func:`parse_point`) into one object, or ``None`` if there are none."""
    triples = list(points)
    if not triples:
        return None
    prompt = ObjectPrompt(points=tuple((x, y) for x, y, _ in triples), labels=tuple(l for _, _, l in triples))
    return validate_prompt(prompt, "--point")


def prompt_from_mapping(obj: Any, what: str = "object") -> ObjectPrompt:
    """Build one :class:`ObjectPrompt` from a prompts-file entry (see the module docstring)."""
    if not isinstance(obj, Mapping):
        raise PromptError(f"{what} must be a mapping with keys {', '.join(PROMPT_FIELDS)}, got {short_repr(obj)}")
    unknown = [str(k) for k in obj if k not in PROMPT_FIELDS]
    if unknown:
        raise PromptError(f"{what}: unknown key {short_repr(unknown[0])}; valid keys: {', '.join(PROMPT_FIELDS)}")

    raw_points = obj.get("points")
    if raw_points is None:
        raw_points = []
    if not isinstance(raw_points, (list, tuple)):
        raise PromptError(f"{what}: points must be a list of [x, y] pairs, got {short_repr(raw_points)}")
    points = []
    for i, p in enumerate(raw_points):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise PromptError(f"{what}: point {i + 1} must be [x, y], got {short_repr(p)}")
        points.append((_number(p[0], f"{what}: point {i + 1} x"), _number(p[1], f"{what}: point {i + 1} y")))

    raw_labels = obj.get("labels")
    if raw_labels is None:
        labels = [1] * len(points)
    elif not isinstance(raw_labels, (list, tuple)):
        raise PromptError(f"{what}: labels must be a list of 0/1, one per point, got {short_repr(raw_labels)}")
    else:
        labels = [_label_value(v, f"{what}: label {i + 1}") for i, v in enumerate(raw_labels)]
    if len(labels) != len(points):
        raise PromptError(f"{what}: {len(points)} points but {len(labels)} labels; give one label per point")

    box = None
    raw_box = obj.get("box")
    if raw_box is not None:
        if not isinstance(raw_box, (list, tuple)) or len(raw_box) != 4:
            raise PromptError(f"{what}: box must be [x0, y0, x1, y1], got {short_repr(raw_box)}")
        box = _check_box([_number(v, f"{what}: box value {i + 1}") for i, v in enumerate(raw_box)], f"{what}: box")

    label = obj.get("label")
    if label is not None:
        if isinstance(label, bool) or not isinstance(label, (str, int, float)):
            raise PromptError(f"{what}: label must be text, got {short_repr(label)}{yes_no_hint(label)}")
        label = str(label).strip() or None
        if label is not None and ("\n" in label or len(label) > 100):
            raise PromptError(f"{what}: label must be one line of at most 100 characters")

    start = obj.get("start_frame", 0)
    if start is None:
        start = 0
    if isinstance(start, str) and integer_in_text(start) is not None:
        start = integer_in_text(start)  # "5" quoted, or 017 as written (YAML 1.1 reads it as octal 15)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise PromptError(f"{what}: start_frame must be an integer >= 0, got {short_repr(start)}{base_60_hint(start)}")

    return validate_prompt(
        ObjectPrompt(points=tuple(points), labels=tuple(labels), box=box, label=label, start_frame=start), what
    )


def load_prompts_file(path: str | Path) -> list[ObjectPrompt]:
    """Read a YAML or JSON prompts file (see the module docstring) into prompts, in file order.

    Raises:
        PromptError: the file is missing, unreadable, unparseable, or any
            entry breaks a rule (the message names the entry and the key).
    """
    p = Path(path)
    name = str(path)
    if not p.exists():
        raise PromptError(f"prompts file not found: {name}")
    if not p.is_file():
        raise PromptError(f"prompts file is not a file: {name}")
    try:
        if p.stat().st_size > _MAX_FILE_BYTES:
            raise PromptError(f"prompts file {name} is larger than {_MAX_FILE_BYTES // 1_000_000} MB; is it the right file?")
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise PromptError(f"prompts file {name} is not UTF-8 text; give a YAML or JSON file") from None
    except OSError as exc:
        raise PromptError(f"cannot read prompts file {name}: {exc.strerror or exc}") from None
    data = _parse_text(text, name, json_first=p.suffix.lower() == ".json")
    if isinstance(data, Mapping) and set(data) == {"objects"}:
        data = data["objects"]
    if not isinstance(data, list):
        raise PromptError(
            f"prompts file {name} must hold a list of objects (each with points/labels/box/label/start_frame), "
            f"got {type(data).__name__}"
        )
    if not data:
        raise PromptError(f"prompts file {name} lists no objects")
    return [prompt_from_mapping(obj, f"{name}: object {i + 1}") for i, obj in enumerate(data)]


class _KeyTwice(ValueError):
    """A JSON object gives ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' ``object_pairs_hook``: the object, refusing a key given twice (``json`` keeps the last)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _KeyTwice(key)
        out[key] = value
    return out


def _key_twice_in_json(text: str, name: str, key: str) -> PromptError:
    """The error for ``key`` given twice in one object of the JSON ``text``, with its lines where YAML finds them."""
    try:
        yaml.load(text, Loader=UniqueKeyLoader)  # JSON is YAML: this loader names both lines
    except yaml.constructor.ConstructorError as exc:
        if exc.problem_mark is not None and "given twice" in (exc.problem or ""):
            return PromptError(f"prompts file {name} is not valid JSON at line {exc.problem_mark.line + 1}: {exc.problem}")
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError):
        pass
    return PromptError(f"prompts file {name} is not valid JSON: {key!r} is given twice in one object")


def _parse_text(text: str, name: str, *, json_first: bool) -> Any:
    if json_first:
        try:
            return json.loads(text, object_pairs_hook=_unique_pairs)
        except _KeyTwice as exc:
            # json keeps the last of a key given twice without a word, as PyYAML does: refused, as in config files.
            raise _key_twice_in_json(text, name, exc.key) from None
        except (json.JSONDecodeError, RecursionError) as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
            raise PromptError(f"prompts file {name} is not valid JSON{where}: {detail}") from None
    try:
        # 1:30, 017, dates as written; a key given twice in one object refused (PyYAML keeps the last).
        return yaml.load(text, Loader=UniqueKeyLoader)
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise PromptError(f"prompts file {name} is not valid YAML{where}: {problem}") from None


def prompts_from_args(
    boxes: Sequence[str] = (), points: Sequence[str] = (), prompts_file: str | Path | None = None
) -> list[ObjectPrompt]:
    """All initial objects from the command line: file objects, then one per box, then one for all points."""
    prompts: list[ObjectPrompt] = []
    if prompts_file is not None:
        prompts.extend(load_prompts_file(prompts_file))
    prompts.extend(ObjectPrompt(box=parse_box(b)) for b in boxes)
    joined = points_prompt(parse_point(p) for p in points)
    if joined is not None:
        prompts.append(joined)
    return prompts


def _clamp(v: float, hi: float) -> float:
    return min(max(v, 0.0), hi)


def clamp_prompt(prompt: ObjectPrompt, width: int, height: int) -> ObjectPrompt:
    """Clamp a prompt's points and box into a ``width x height`` frame.

    Points outside move to the nearest pixel inside (``0..width-1``,
    ``0..height-1``); a box is cut to the frame, ``0..width-1`` x
    ``0..height-1`` too, except along a side one pixel long (a 1-px-wide
    frame), where it is cut to ``0..1``: the pixel's span, as a box of
    positive size needs. A box that lies entirely outside (nothing left
    after cutting) raises :class:`PromptError`, since clamping it would
    invent an object on the frame's edge.
    """
    if width < 1 or height < 1:
        raise PromptError(f"frame size must be positive, got {width}x{height}")
    xmax, ymax = float(width - 1), float(height - 1)
    points = tuple((_clamp(x, xmax), _clamp(y, ymax)) for x, y in prompt.points)
    box = prompt.box
    if box is not None:
        x0, y0, x1, y1 = box
        # Cut to 0..0 along a 1-px side, every box had zero size there: refused, with advice
        # ("within 0..0") no box could follow.
        bx, by = max(xmax, 1.0), max(ymax, 1.0)
        cut = (_clamp(x0, bx), _clamp(y0, by), _clamp(x1, bx), _clamp(y1, by))
        if cut[2] <= cut[0] or cut[3] <= cut[1]:
            raise PromptError(
                f"box ({x0:g},{y0:g},{x1:g},{y1:g}) lies outside the {width}x{height} frame; "
                f"give coordinates within 0..{bx:g} x 0..{by:g}"
            )
        box = cut
    if points == prompt.points and box == prompt.box:
        return prompt
    return ObjectPrompt(
        points=points,
        labels=prompt.labels,
        box=box,
        label=prompt.label,
        start_frame=prompt.start_frame,
        track_id=prompt.track_id,
    )


def check_start_frame(prompt: ObjectPrompt, source: Any, what: str = "prompt") -> None:
    """Refuse a prompt whose ``start_frame`` lies past the end of ``source``, before the run.

    ``source.num_frames`` (a video file's index, an image folder's count) is at most the
    frames the source delivers, so a ``start_frame`` at or past it would never be applied:
    the run would end without the object. Sources without a count (cameras, streams, an
    MKV or TS file) are not checked.

    Raises:
        PromptError: one line naming ``what``, its ``start_frame`` and the source's frame count.
    """
    total = getattr(source, "num_frames", None)
    if not total or getattr(source, "live", False) or prompt.start_frame < total:
        return
    raise PromptError(
        f"{what}{described(prompt)}: start_frame {prompt.start_frame} is past the end of {source.name}, "
        f"which has {total} frames (0..{total - 1}); give a start_frame below {total}"
    )


def described(prompt: ObjectPrompt) -> str:
    """`` (label "car", box 10,20,110,120)``: what tells one prompt from another in a message."""
    parts = [f"label {prompt.label!r}"] if prompt.label else []
    if prompt.box is not None:
        parts.append("box " + ",".join(f"{v:g}" for v in prompt.box))
    elif prompt.points:
        parts.append("point " + ",".join(f"{v:g}" for v in prompt.points[0]))
    return f" ({', '.join(parts)})" if parts else ""


def clamp_initial_prompt(prompt: ObjectPrompt, source: Any, what: str = "prompt") -> ObjectPrompt:
    """A run's starting prompt clamped into ``source``'s frames (:func:`clamp_prompt`), before the model loads.

    ``source.size`` is the first frame's. Where the source's frames come at other sizes
    (``source.sizes_vary``: an image folder of several sizes) a prompt that starts later is
    returned as given: the engine cuts it to the frame it starts on (dropping it with a
    warning where nothing of it is inside), which may be larger than the first. A
    ``start_frame`` past the end of a source of known length is refused
    (:func:`check_start_frame`, naming the prompt as ``what``).
    """
    check_start_frame(prompt, source, what)
    if prompt.start_frame and getattr(source, "sizes_vary", False):
        return prompt
    width, height = source.size
    return clamp_prompt(prompt, width, height)
