"""Initial prompts: --box / --point / --prompts parsing, validation and clamping."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_sam.errors import PromptError, RealtimeSamError
from realtime_sam.tracking.prompts import (
    MAX_COORD,
    PROMPT_FIELDS,
    clamp_prompt,
    load_prompts_file,
    parse_box,
    parse_point,
    points_prompt,
    prompt_from_mapping,
    prompts_from_args,
    validate_prompt,
)
from realtime_sam.types import ObjectPrompt


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg, msg
    return msg


# ------------------------------------------------------------------ --box


def test_box_parses_xyxy_floats():
    assert parse_box("10,20,110,220.5") == (10.0, 20.0, 110.0, 220.5)
    assert parse_box(" 1 , 2 , 3 , 4 ") == (1.0, 2.0, 3.0, 4.0)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("1,2,3", "four numbers"),
        ("1,2,3,4,5", "four numbers"),
        ("", "four numbers"),
        ("a,2,3,4", "must be a number"),
        ("nan,2,3,4", "finite"),
        ("1,inf,3,4", "finite"),
        ("1,2,-inf,4", "finite"),
        ("1,2,1e9,4", "too large"),
        ("30,40,10,20", "inverted"),
        ("10,40,30,20", "inverted"),
        ("10,20,10,50", "zero area"),
        ("10,20,50,20", "zero area"),
    ],
)
def test_box_errors_are_one_line(text, fragment):
    with pytest.raises(PromptError) as exc:
        parse_box(text)
    assert fragment in one_line(exc)


# ------------------------------------------------------------------ --point


def test_point_default_label_is_positive():
    assert parse_point("5,6") == (5.0, 6.0, 1)
    assert parse_point("5.5,6,0") == (5.5, 6.0, 0)
    assert parse_point("5,6,1") == (5.0, 6.0, 1)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("5", "x,y or x,y,label"),
        ("1,2,1,4", "x,y or x,y,label"),
        ("1,2,2", "label must be 1"),
        ("1,2,yes", "label must be 1"),
        ("1,2,-1", "label must be 1"),
        ("nan,2", "finite"),
        ("1,1e300", "too large"),
        ("x,2", "must be a number"),
    ],
)
def test_point_errors(text, fragment):
    with pytest.raises(PromptError) as exc:
        parse_point(text)
    assert fragment in one_line(exc)


def test_all_points_form_one_object_and_boxes_one_each():
    prompts = prompts_from_args(boxes=["0,0,10,10", "20,20,40,40"], points=["5,5", "7,7,0", "9,9"])
    assert len(prompts) == 3
    assert [p.box for p in prompts[:2]] == [(0, 0, 10, 10), (20, 20, 40, 40)]
    assert prompts[0].points == () and prompts[0].labels == ()
    assert prompts[2].points == ((5, 5), (7, 7), (9, 9))
    assert prompts[2].labels == (1, 0, 1)
    assert prompts[2].box is None
    assert all(p.start_frame == 0 and p.track_id is None for p in prompts)


def test_no_prompts_gives_empty_list():
    assert prompts_from_args() == []
    assert points_prompt([]) is None


def test_only_negative_points_is_an_error():
    with pytest.raises(PromptError) as exc:
        prompts_from_args(points=["5,5,0", "6,6,0"])
    assert "label 1" in one_line(exc)


# ------------------------------------------------------------------ files


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_file_with_every_field(tmp_path):
    path = write(
        tmp_path,
        "p.yaml",
        """
- points: [[10, 20], [30, 40]]
  labels: [1, 0]
  label: cup
- box: [5, 6, 50, 60]
  points: [[20, 30]]
  start_frame: 12
- points: [[1.5, 2.5]]
""",
    )
    prompts = load_prompts_file(path)
    assert prompts[0] == ObjectPrompt(points=((10, 20), (30, 40)), labels=(1, 0), label="cup")
    assert prompts[1] == ObjectPrompt(points=((20, 30),), labels=(1,), box=(5, 6, 50, 60), start_frame=12)
    # labels default to positive
    assert prompts[2].labels == (1,) and prompts[2].points == ((1.5, 2.5),)


def test_json_file_and_objects_wrapper(tmp_path):
    objs = [{"box": [1, 2, 3, 4], "label": "a"}, {"points": [[7, 8]], "labels": [1]}]
    as_list = write(tmp_path, "p.json", json.dumps(objs))
    wrapped = write(tmp_path, "w.json", json.dumps({"objects": objs}))
    assert load_prompts_file(as_list) == load_prompts_file(wrapped)
    assert [p.label for p in load_prompts_file(as_list)] == ["a", None]


def test_file_objects_come_before_flags(tmp_path):
    path = write(tmp_path, "p.yaml", "- box: [1, 2, 3, 4]\n")
    prompts = prompts_from_args(boxes=["10,10,20,20"], points=["5,5"], prompts_file=path)
    assert [p.box for p in prompts] == [(1, 2, 3, 4), (10, 10, 20, 20), None]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("- points: [[1, 2]]\n  colour: red\n", "unknown key 'colour'; valid keys: " + ", ".join(PROMPT_FIELDS)),
        ("- points: [[1, 2], [3, 4]]\n  labels: [1]\n", "2 points but 1 labels"),
        ("- points: [[1, 2]]\n  labels: [2]\n", "label 1 must be 1"),
        ("- points: [[1, 2]]\n  labels: [true]\n", "must be 1"),
        ("- points: [[1, 2]]\n  labels: 1\n", "labels must be a list"),
        ("- points: [[1, 2, 3]]\n", "point 1 must be [x, y]"),
        ("- points: [1, 2]\n", "point 1 must be [x, y]"),
        ("- points: 5\n", "points must be a list"),
        ("- points: [[.nan, 2]]\n", "finite"),
        ("- points: [[.inf, 2]]\n", "finite"),
        ("- points: [[1e12, 2]]\n", "too large"),
        ("- points: [[true, 2]]\n", "must be a number"),
        ("- box: [1, 2, 3]\n", "box must be [x0, y0, x1, y1]"),
        ("- box: [30, 40, 10, 20]\n", "inverted"),
        ("- box: [1, 2, 1, 4]\n", "zero area"),
        ("- box: [1, 2, 3, 4]\n  start_frame: -1\n", "start_frame must be an integer >= 0"),
        ("- box: [1, 2, 3, 4]\n  start_frame: 1.5\n", "start_frame must be an integer >= 0"),
        ("- box: [1, 2, 3, 4]\n  label: [a]\n", "label must be text"),
        ("- labels: []\n", "object 1 needs at least one point or a box"),
        ("- points: [[1, 2]]\n  labels: [0]\n", "needs a box or at least one point with label 1"),
        ("- 5\n", "must be a mapping"),
        ("points: [[1, 2]]\n", "must hold a list of objects"),
        ("[]\n", "lists no objects"),
        ("", "must hold a list of objects"),
        ("- points: [[1, 2]\n", "not valid YAML at line"),
        ("- {box: [1, 2, 3, 4]}\n- {box: [1, 2, 3, 4], extra: 1}\n", "object 2: unknown key 'extra'"),
    ],
)
def test_file_errors_name_the_problem(tmp_path, text, fragment):
    path = write(tmp_path, "p.yaml", text)
    with pytest.raises(PromptError) as exc:
        load_prompts_file(path)
    msg = one_line(exc)
    assert fragment in msg
    assert str(path) in msg


@pytest.mark.parametrize(
    "quoted,number,integer",
    [
        ('"5"', 5.0, 5), ("'017'", 17.0, 17), ('" 5 "', 5.0, 5), ('"1_000"', 1000.0, 1000), ('"+3"', 3.0, 3),
        ('"2.5"', 2.5, None), ('" 1e1 "', 10.0, None), ('"\u0661\u0662"', None, None), ('"\uff15"', None, None),
    ],
)
def test_a_quoted_number_is_read_as_config_keys_read_it(tmp_path, quoted, number, integer):
    # Coordinates read a quoted number as float config keys do, start_frame and labels as integer
    # keys do (README: Configuration). Before, coordinates took Arabic-Indic and full-width digits
    # (float() reads them) that config keys refuse, start_frame refused " 5 " and labels any "1".
    from realtime_sam.config import load_config
    from realtime_sam.errors import ConfigError

    def config(key: str):
        try:
            cfg = load_config(None, [f"{key}={quoted}"])
        except ConfigError:
            return None
        return cfg.source.backoff_max_s if key.startswith("source") else cfg.engine.reencode_every

    def prompts(text: str):
        try:
            return load_prompts_file(write(tmp_path, "p.yaml", text))[0]
        except PromptError as exc:
            one_line_message = str(exc)
            assert "\n" not in one_line_message and "p.yaml" in one_line_message
            return None

    as_float, as_int = config("source.backoff_max_s"), config("engine.reencode_every")
    assert (as_float, as_int) == (number, integer)  # None: refused
    got = prompts(f"- box: [{quoted}, 0, 9999, 9999]\n")
    assert (got.box[0] if got else None) == as_float
    got = prompts(f"- box: [0, 0, 10, 10]\n  start_frame: {quoted}\n")
    assert (got.start_frame if got else None) == as_int


@pytest.mark.parametrize(
    "quoted,label", [('"1"', 1), ("' 0 '", 0), ("'01'", 1), ('"1.0"', None), ('"2"', None), ('"\u0661"', None)]
)
def test_a_quoted_point_label_is_read_as_an_integer_key_reads_it(tmp_path, quoted, label):
    # Before, any quoted label was refused ("1" too), where an integer config key reads "1" as 1.
    path = write(tmp_path, "p.yaml", f"- points: [[3, 3], [5, 5]]\n  labels: [1, {quoted}]\n")
    if label is None:
        with pytest.raises(PromptError, match=r"label 2 must be 1 \(on the object\) or 0") as exc:
            load_prompts_file(path)
        assert repr(yaml.safe_load(quoted)) in one_line(exc)
    else:
        assert load_prompts_file(path)[0].labels == (1, label)


def test_file_missing_directory_binary_and_bad_json(tmp_path):
    with pytest.raises(PromptError) as exc:
        load_prompts_file(tmp_path / "nope.yaml")
    assert "not found" in one_line(exc)
    with pytest.raises(PromptError) as exc:
        load_prompts_file(tmp_path)
    assert "not a file" in one_line(exc)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(PromptError) as exc:
        load_prompts_file(binary)
    assert "not UTF-8" in one_line(exc)
    bad_json = write(tmp_path, "p.json", '[{"box": [1, 2, 3, 4]},]')
    with pytest.raises(PromptError) as exc:
        load_prompts_file(bad_json)
    assert "not valid JSON at line 1" in one_line(exc)


@pytest.mark.parametrize(
    "name, text, expected",
    [
        # PyYAML and json kept the last of a key given twice: the first box was dropped without a word.
        ("p.yaml", "- box: [1, 2, 30, 40]\n  label: a\n  box: [5, 6, 70, 80]\n",
         "is not valid YAML at line 3: 'box' is given twice (lines 1 and 3)"),
        ("p.yaml", "objects:\n  - {label: a, start_frame: 2, label: b, box: [1, 2, 3, 4]}\n",
         "is not valid YAML at line 2: 'label' is given twice (line 2)"),
        ("p.json", '[\n  {"box": [1, 2, 30, 40]},\n  {"box": [1, 2, 30, 40],\n   "box": [5, 6, 70, 80]}\n]\n',
         "is not valid JSON at line 4: 'box' is given twice (lines 3 and 4)"),
        # JSON that YAML cannot read (a tab before a key) is still refused, by key.
        ("p.json", '[{"box": [1, 2, 30, 40],\t"box": [5, 6, 70, 80]}]',
         "is not valid JSON: 'box' is given twice in one object"),
    ],
)
def test_a_key_given_twice_in_one_object_is_refused_with_its_lines(tmp_path, name, text, expected):
    path = write(tmp_path, name, text)
    with pytest.raises(PromptError) as exc:
        load_prompts_file(path)
    assert one_line(exc) == f"prompts file {path} {expected}"


def test_the_same_key_in_two_objects_is_no_repeat(tmp_path):
    path = write(tmp_path, "p.json", '[{"box": [1, 2, 30, 40], "label": "a"}, {"box": [5, 6, 70, 80], "label": "a"}]')
    assert [p.box for p in load_prompts_file(path)] == [(1.0, 2.0, 30.0, 40.0), (5.0, 6.0, 70.0, 80.0)]


# ------------------------------------------------------------------ validate / clamp


def test_validate_prompt_checks_hand_built_prompts():
    ok = validate_prompt(ObjectPrompt(points=((1, 2),), labels=(1,)))
    assert ok.points == ((1.0, 2.0),) and isinstance(ok.points[0][0], float)
    # a negative point refining an existing track needs no positive point
    assert validate_prompt(ObjectPrompt(points=((1, 2),), labels=(0,), track_id=3)).track_id == 3
    with pytest.raises(PromptError, match="2 points but 1 labels"):
        validate_prompt(ObjectPrompt(points=((1, 2), (3, 4)), labels=(1,)))
    with pytest.raises(PromptError, match="finite"):
        validate_prompt(ObjectPrompt(points=((math.nan, 2),), labels=(1,)))
    with pytest.raises(PromptError, match="inverted"):
        validate_prompt(ObjectPrompt(box=(5, 5, 1, 1)))
    with pytest.raises(PromptError, match="start_frame"):
        validate_prompt(ObjectPrompt(box=(1, 1, 5, 5), start_frame=-2))
    for empty in (ObjectPrompt(), ObjectPrompt(points=[], labels=[]), ObjectPrompt(track_id=3)):
        with pytest.raises(PromptError, match=r"^click needs at least one point or a box$"):
            validate_prompt(empty, "click")


def test_clamp_moves_points_and_cuts_boxes_into_the_frame():
    p = ObjectPrompt(points=((-5, 10), (700, 500), (10, 20)), labels=(1, 0, 1), box=(-10, -10, 100, 1000), label="x")
    c = clamp_prompt(p, 640, 480)
    assert c.points == ((0, 10), (639, 479), (10, 20))
    assert c.box == (0, 0, 100, 479)
    assert (c.labels, c.label) == (p.labels, p.label)
    inside = ObjectPrompt(points=((1, 1),), labels=(1,), box=(0, 0, 10, 10))
    assert clamp_prompt(inside, 640, 480) is inside


def test_clamp_rejects_a_box_entirely_outside():
    with pytest.raises(PromptError) as exc:
        clamp_prompt(ObjectPrompt(box=(700, 10, 800, 20)), 640, 480)
    assert "outside the 640x480 frame" in one_line(exc)


# ------------------------------------------------------------------ fuzzing

_texty = st.text(alphabet=st.sampled_from("0123456789.,-+eEinfatxyz _\t"), max_size=30) | st.text(max_size=20)
_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
_value = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)
_entry = st.dictionaries(st.sampled_from([*PROMPT_FIELDS, "bogus"]), _value, max_size=6)


@settings(max_examples=300, deadline=None)
@given(text=_texty)
def test_fuzz_flags_raise_only_prompt_error(text):
    for parse in (parse_box, parse_point):
        try:
            parse(text)
        except PromptError as exc:
            assert "\n" not in str(exc)


@settings(max_examples=150, deadline=None)
@given(entry=_entry | _value)
def test_fuzz_file_entries_raise_only_prompt_error(entry):
    try:
        prompt = prompt_from_mapping(entry)
    except PromptError as exc:
        assert "\n" not in str(exc)
    else:
        assert len(prompt.points) == len(prompt.labels)
        assert all(math.isfinite(v) and abs(v) <= MAX_COORD for pt in prompt.points for v in pt)
        assert prompt.box is None or (prompt.box[2] > prompt.box[0] and prompt.box[3] > prompt.box[1])


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz_file_bytes_raise_only_prompt_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "p.yaml"
    path.write_bytes(data)
    try:
        load_prompts_file(path)
    except PromptError as exc:
        assert "\n" not in str(exc)


def test_prompt_error_is_a_realtime_sam_error():
    assert issubclass(PromptError, RealtimeSamError)


def test_yaml_roundtrip_of_loaded_prompts(tmp_path):
    """What load_prompts_file returns can be written back and read again unchanged."""
    path = write(tmp_path, "p.yaml", "- {points: [[1, 2], [3, 4]], labels: [1, 0], box: [0, 0, 9, 9], label: a, start_frame: 3}\n")
    (first,) = load_prompts_file(path)
    again = write(
        tmp_path,
        "q.yaml",
        yaml.safe_dump(
            [
                {
                    "points": [list(p) for p in first.points],
                    "labels": list(first.labels),
                    "box": list(first.box),
                    "label": first.label,
                    "start_frame": first.start_frame,
                }
            ]
        ),
    )
    assert load_prompts_file(again) == [first]
