"""The YAML loader of every file and ``--set`` value this package reads: PyYAML's safe
loader with the YAML 1.1 number and date readings nobody writing a setting means.

PyYAML implements YAML 1.1, whose implicit types differ from what YAML 1.2 (and
anyone writing a setting) reads:

* ``1:30`` is a base-60 number (90; ``12:30:00`` is 45000): here it stays the text
  written, so a key that wants a number refuses it by name instead of taking 90;
* ``017`` is octal (15) while ``08`` is text: here both stay the text written (a
  stream named ``01`` keeps its name; a key that wants an integer reads 17 and 8);
* ``0o17`` is text: here it is 15, as in YAML 1.2 and Python;
* ``2024-05-01`` is a date: here it stays the text written (a stream named by its day).

Kept as PyYAML reads them: ``0x10`` (16), ``1_000`` (1000), ``.5``, ``yes``/``no``/
``on``/``off`` (true/false: what a switch means; a key that wants text says to quote
them), and ``1e3`` (text, which a key that wants a float reads as 1000.0).

:class:`UniqueKeyLoader`, for config, streams and prompts files, also refuses a key
given twice in one mapping, naming both lines.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["ScalarLoader", "UniqueKeyLoader", "BASE_60", "DECIMAL", "base_60_hint", "integer_in_text", "number_in_text", "yes_no_hint"]

BASE_60 = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
"""What YAML 1.1 reads as a base-60 number (``1:30``, ``-12:30:00``, ``1:30.5``)."""

_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")
_OCTAL_0O = re.compile(r"[-+]?0o[0-7_]+")


class ScalarLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` reading base-60 numbers, leading-zero numbers and dates as the text written, ``0o17`` as 15."""


def _int(loader: ScalarLoader, node: yaml.ScalarNode):
    text = loader.construct_scalar(node)
    if ":" in text or _LEADING_ZERO.fullmatch(text):
        return text
    if _OCTAL_0O.fullmatch(text):
        sign = -1 if text.startswith("-") else 1
        return sign * int(text.lstrip("+-")[2:].replace("_", ""), 8)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


def _float(loader: ScalarLoader, node: yaml.ScalarNode):
    text = loader.construct_scalar(node)
    return text if ":" in text else yaml.SafeLoader.construct_yaml_float(loader, node)


ScalarLoader.add_constructor("tag:yaml.org,2002:int", _int)
ScalarLoader.add_constructor("tag:yaml.org,2002:float", _float)
ScalarLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))
ScalarLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?0o[0-7_]+$"), list("-+0"))


class UniqueKeyLoader(ScalarLoader):
    """:class:`ScalarLoader` (YAML 1.1's base-60 numbers, octal and
    dates as written) that refuses a key given twice in one mapping.

    PyYAML keeps the last silently: a second ``engine:`` section would drop
    every key of the first without a word.
    """

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            # YAML's merge key (`<<: *anchor`) is no key of the mapping: the base class merges it in,
            # and keys given after it override the merged ones. A mapping merged into another is
            # flattened in place, so its merged-in keys stand before its own: only the mapping's
            # own keys (from its start on) are compared.
            if key_node.tag == "tag:yaml.org,2002:merge" or key_node.start_mark.index < node.start_mark.index:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key; the base class reports it
                continue
            seen[key] = line
            if first is not None:
                lines = f"line {line}" if first == line else f"lines {first} and {line}"
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice ({lines})", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


DECIMAL = re.compile(r"[-+]?[0-9][0-9_]*")
"""An integer as written in decimal, leading zeros allowed (``017`` and ``08``, which the loader keeps as text)."""


def integer_in_text(text: str) -> int | None:
    """The whole number ``text`` spells (``"5"`` quoted, ``017`` kept as text), else ``None``.

    Spaces around it are allowed; digits are ASCII only. ``017`` is 17 (YAML 1.1 reads it as octal 15).
    Config keys and prompts files read quoted numbers through this and :func:`number_in_text` alike.
    """
    text = text.strip()
    return int(text.replace("_", ""), 10) if DECIMAL.fullmatch(text) else None


def number_in_text(text: str) -> float | None:
    """The number ``text`` spells (``"0.5"`` quoted; ``1e-3``, which YAML 1.1 leaves as text), else ``None``.

    Spaces around it are allowed; ASCII only, as :func:`integer_in_text` (``float`` alone would take
    Arabic-Indic or full-width digits). ``nan`` and ``inf`` are returned: callers refuse them.
    """
    if not text.isascii():
        return None
    try:
        return float(text)
    except ValueError:
        return None


def base_60_hint(value: object) -> str:
    """For ``1:30`` where a number is wanted, ``"; write one number (...)"``; else ``""``."""
    if not isinstance(value, str) or not BASE_60.fullmatch(value):
        return ""
    total = 0.0
    for part in value.lstrip("+-").replace("_", "").split(":"):
        total = total * 60 + float(part)
    total = -total if value.startswith("-") else total
    number = int(total) if total.is_integer() else total
    return f"; write one number (colons are not read as base 60, where {value} is {number})"


def yes_no_hint(value: object) -> str:
    """For true or false where text is wanted (YAML read an unquoted yes, no, on or off), how to write the word; else ``""``."""
    if value is True:
        return " (YAML reads an unquoted yes, on or true as true: quote the word, e.g. 'yes')"
    if value is False:
        return " (YAML reads an unquoted no, off or false as false: quote the word, e.g. 'no')"
    return ""
