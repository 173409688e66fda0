"""Several streams in one run: what each stream is (:class:`StreamSpec`), its name, its output paths.

Streams come from repeated ``--source`` flags or from a ``--sources`` YAML
file::

    streams:                      # or the list itself at the top level
      - name: door                # optional: default from the source (see stream_name)
        source: rtsp://cam1/live  # or url: / path: ; a webcam index, a file, lavfi:GRAPH ...
        prompts:                  # optional: a list of objects as in a --prompts file, or that file's path
          - box: [100, 80, 300, 260]
        settings:                 # optional: this stream's own settings (any section but model and streams)
          engine: {reencode_every: 3}
        output: out/door.mp4      # optional: overrides --output for this stream
        save_masks: out/door.jsonl  # optional: overrides --save-masks

Prompts given on the command line apply to every stream (after the stream's
own). ``{name}`` in ``--output`` / ``--save-masks`` is replaced by each
stream's name and is required when there are several streams, so that no
two streams write one file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence


from realtime_sam.capture.base import redact_source
from realtime_sam.errors import ConfigError, PromptError, SinkError
from realtime_sam.tracking.prompts import load_prompts_file, prompt_from_mapping
from realtime_sam.types import ObjectPrompt

if TYPE_CHECKING:
    from realtime_sam.config import Config

__all__ = [
    "StreamSpec", "stream_name", "unique_names", "expand_path", "load_streams_file", "specs_from_sources",
    "refuse_writing_sources",
]

_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEYS = {"name", "source", "url", "path", "prompts", "settings", "output", "save_masks"}
PLACEHOLDER = "{name}"


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a multi-stream run.

    Attributes:
        name: unique, file-name safe (``[A-Za-z0-9._-]``); replaces ``{name}`` in output paths.
        source: what :func:`~realtime_sam.capture.sources.open_source` opens (webcam index, path, URL, ``lavfi:``).
        prompts: this stream's own objects (the command line's are added to every stream).
        settings: ``{section: {key: value}}`` applied over the run's configuration for this stream.
        output: annotated-video path for this stream (overrides the run's ``--output``); a relative one is
            from the current folder, as ``--output``'s (a ``source`` is from the YAML file's folder).
        save_masks: mask output path for this stream (overrides the run's ``--save-masks``).
    """

    name: str
    source: str | int
    prompts: tuple[ObjectPrompt, ...] = ()
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    output: str | None = None
    save_masks: str | None = None


def _slug(text: str, limit: int = 48) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
    return (s[:limit].rstrip("_") or "stream")


def stream_name(source: str | int) -> str:
    """A stream's default name: ``cam0`` for webcam 0, a file's stem, a slug of a URL (host, port and path,
    credentials dropped) or of a ``lavfi:`` graph."""
    text = str(source)
    if isinstance(source, int) or text.isdigit():
        return f"cam{int(text)}"
    if "://" in text:
        # redact_source, not redact_url: a password with a space or a quote is hidden too. Only the
        # hidden user info is dropped: an "@" in the path is the path's ("host:554/a@b" was named "b").
        rest = redact_source(text).split("://", 1)[1]
        rest = rest.removeprefix("***@")
        rest = rest.split("?", 1)[0]
        return _slug(rest)
    if text.startswith("lavfi:"):
        return _slug(text)
    stem = Path(text.rstrip("/")).stem or Path(text).name
    return _slug(stem)


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` with repeats made unique: the second ``clip`` becomes ``clip-2``, and so on."""
    seen: dict[str, int] = {}
    taken = set(names)
    out = []
    for n in names:
        if n not in seen:
            seen[n] = 1
            out.append(n)
            continue
        k = seen[n] + 1
        while f"{n}-{k}" in taken:
            k += 1
        seen[n] = k
        taken.add(f"{n}-{k}")
        out.append(f"{n}-{k}")
    return out


def expand_path(template: str | None, name: str, *, several: bool, flag: str) -> str | None:
    """``template`` with ``{name}`` replaced by ``name``.

    Raises:
        SinkError: several streams and no ``{name}`` in ``template`` (they would all write one file).
    """
    if template is None:
        return None
    if PLACEHOLDER not in template:
        if several:
            raise SinkError(
                f"{flag} {template} would be written by every stream; put {PLACEHOLDER} in it, "
                f"e.g. {flag} 'out/{PLACEHOLDER}{Path(template).suffix}'"
            )
        return template
    return template.replace(PLACEHOLDER, name)


def _local_path(source: str | int) -> Path | None:
    """The file or folder a source reads, or ``None`` (a webcam, a URL, a ``lavfi:`` graph)."""
    if isinstance(source, int):
        return None
    text = str(source).strip()
    if not text or text.isdigit() or "://" in text or text.startswith("lavfi:"):
        return None
    return Path(text).expanduser()


def _same_path(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # a link or another spelling of the same file
    except OSError:  # one of them does not exist (yet)
        return a.resolve() == b.resolve()


def refuse_writing_sources(outputs: Sequence[tuple[str, str | Path]], sources: Mapping[str, str | int]) -> None:
    """Refuse an output path that is a source being read.

    Opening the output truncates it: ``--source a.mp4 --source b.mp4 --output '{name}.mp4'`` wrote
    each stream's video over the file it was reading, which ended damaged, its frames lost.

    Args:
        outputs: ``(flag, path)`` of each output, e.g. ``("--output", "a.mp4")``.
        sources: ``{stream name: source}``.

    Raises:
        SinkError: one line naming the output, the stream whose source it is, and what to do.
    """
    local = [(name, p) for name, src in sources.items() if (p := _local_path(src)) is not None]
    for flag, path in outputs:
        out = Path(path).expanduser()
        for name, src in local:
            if _same_path(out, src):
                whose = "the source" if len(sources) == 1 else f"the source of stream {name}"
                hint = f", e.g. {flag} 'out/{PLACEHOLDER}{out.suffix}'" if flag.startswith("--") else ""
                raise SinkError(f"{flag} {path} is {whose}: writing it would destroy the file being read; give another path{hint}")


def specs_from_sources(sources: Sequence[str]) -> list[StreamSpec]:
    """One spec per ``--source`` value, named by :func:`stream_name` (repeats made unique)."""
    names = unique_names([stream_name(s) for s in sources])
    return [StreamSpec(name=n, source=s) for n, s in zip(names, sources)]


def _prompts(value: Any, where: str, base: Path) -> tuple[ObjectPrompt, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        p = Path(value)
        try:
            return tuple(load_prompts_file(p if p.is_absolute() else base / p))
        except PromptError as exc:  # which stream's prompts file, among several
            raise ConfigError(f"{where}: {exc}") from None
    if isinstance(value, Mapping) and set(value) == {"objects"}:
        value = value["objects"]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: prompts must be a list of objects or a prompts file path, got {type(value).__name__}")
    return tuple(prompt_from_mapping(obj, f"{where}: prompts object {i + 1}") for i, obj in enumerate(value))


def _settings(value: Any, where: str, base: Config | None = None) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise ConfigError(f"{where}: settings must map sections to keys, e.g. settings: {{engine: {{reencode_every: 3}}}}")
    if "model" in value:
        raise ConfigError(f"{where}: settings cannot change the model section: one model serves every stream")
    if "streams" in value:
        raise ConfigError(f"{where}: settings cannot change the streams section: it is the run's (--set streams.KEY=VALUE)")
    from realtime_sam.config import parse_config

    data = {str(k): dict(v) for k, v in value.items()}
    try:
        # Over the run's configuration, as multi.stream_config applies them: a key checked with
        # another (backoff_initial_s <= backoff_max_s ...) is checked against the value the run uses.
        merged = parse_config(data, base)  # unknown sections/keys and bad values fail here, naming the valid ones
        if "detect" in data:
            # detect.* without a detector (the run's --detect, or this stream's detect.model) was
            # refused only as this stream's engine was built, after every source had opened.
            merged.detect.require_detector()
    except ConfigError as exc:
        raise ConfigError(f"{where}: settings: {exc}") from None
    return data


def load_streams_file(path: str | Path, config: Config | None = None) -> list[StreamSpec]:
    """Read a ``--sources`` YAML file (see the module docstring).

    Relative file sources and prompt files are taken from the YAML file's folder. Each stream's
    ``settings`` are checked over ``config``, the run's configuration (default: the defaults).

    Raises:
        ConfigError: the file is missing or malformed, a stream has no source, an unknown key,
            a bad or repeated name, a key given twice in one mapping, or settings that do not parse
            or set ``detect.*`` with no detector to use them (the message names the stream).
    """
    from realtime_sam.config import read_yaml
    from realtime_sam.yaml_loader import yes_no_hint

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--sources file not found: {path}")
    if not p.is_file():  # a folder (or a device): "not found" sent users looking for a missing file
        raise ConfigError(f"--sources {path} is not a file; give a YAML file listing the streams")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--sources file {path} is not readable YAML: {str(exc).splitlines()[0]}") from None
    # As for config files: PyYAML would keep the last of a key given twice (a second name:,
    # settings: or source:) without a word.
    data = read_yaml(text, f"--sources file {path}")
    if isinstance(data, Mapping) and "streams" in data:
        data = data["streams"]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"--sources file {path} must hold a non-empty list of streams (each with source: and optional name:)")
    base = p.resolve().parent
    specs: list[StreamSpec] = []
    for i, entry in enumerate(data):
        where = f"{path}: stream {i + 1}"
        if not isinstance(entry, Mapping):
            entry = {"source": entry}  # a bare source
        unknown = set(entry) - _KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; valid: {', '.join(sorted(_KEYS))}")
        given = [k for k in ("source", "url", "path") if entry.get(k) is not None]
        if len(given) != 1:
            raise ConfigError(f"{where}: give exactly one of source:, url: or path:")
        source = entry[given[0]]
        if isinstance(source, bool) or not isinstance(source, (str, int)):
            raise ConfigError(f"{where}: the source must be a string or a webcam index, got {source!r}")
        if isinstance(source, str) and "://" not in source and not source.startswith("lavfi:") and not source.isdigit():
            sp = Path(source).expanduser()
            source = str(sp if sp.is_absolute() else base / sp)
        name = entry.get("name")
        if name is None:
            name = stream_name(source)
        elif not isinstance(name, str) or not _NAME_OK.match(name):
            raise ConfigError(f"{where}: name {name!r} must be 1-64 of letters, digits, '.', '_' or '-'{yes_no_hint(name)}")
        for key in ("output", "save_masks"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                # str(False) would write to a file named False.
                raise ConfigError(f"{where}: {key} must be a file path, not {entry[key]!r}{yes_no_hint(entry[key])}")
            if isinstance(entry.get(key), str) and not entry[key].strip():  # '' wrote nothing, without a word
                raise ConfigError(f"{where}: {key} is empty; give a path, or leave the key out")
        specs.append(
            StreamSpec(
                name=name,
                source=source,
                prompts=_prompts(entry.get("prompts"), where, base),
                settings=_settings(entry.get("settings"), where, config),
                output=None if entry.get("output") is None else str(entry["output"]),
                save_masks=None if entry.get("save_masks") is None else str(entry["save_masks"]),
            )
        )
    named = [s.name for s in specs]
    dup = sorted({n for n in named if named.count(n) > 1})
    if dup:
        # Explicit names must be unique; default names are made unique.
        explicit = {e.get("name") for e in data if isinstance(e, Mapping)}
        if any(d in explicit for d in dup):
            raise ConfigError(f"--sources file {path}: stream name(s) {', '.join(dup)} used twice; give each stream its own name")
        from dataclasses import replace

        specs = [replace(s, name=n) for s, n in zip(specs, unique_names(named))]
    return specs
