"""Hostile input for the training pipeline's files: a YAML config is either a
config or a ``ConfigError`` naming the key that is wrong; a JSONL data file is either
checked, its problems reported per sample, or refused with a ``DataError`` naming its line.
Both are hand-edited files: a traceback would tell their author nothing."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hostile import PROPERTIES, Tally, hostile_text, mutated, tally_fixture
from training.config import ConfigError, TrainConfig
from training.dataset import samples
from training.dataset.check import check
from training.dataset.generator import generate
from training.dataset.samples import DataError

tally = tally_fixture("training config YAML and data JSONL")

SHIPPED = Path(__file__).resolve().parents[2] / "training" / "configs" / "axolotl-config.yaml"
VALID: dict[str, Any] = yaml.safe_load(SHIPPED.read_text())
KEYS = sorted(TrainConfig.model_fields)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("training-input")


def load(workdir: Path, text: str) -> TrainConfig:
    path = workdir / "config.yaml"
    path.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unknown keys: warned, by design
        return TrainConfig.load(path)


def names_a_key(message: str, keys: list[Any]) -> bool:
    """The message names one of ``keys`` as ``key=``, ``key[i]`` or ``key.field``."""
    return any(re.search(rf"(^|\s){re.escape(str(key))}[=\[.]", message) for key in keys)


# --------------------------------------------------------------------------- config

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63]),
    st.floats(),  # .nan, .inf
    hostile_text,
    st.dates(),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
config_keys = st.one_of(
    st.sampled_from(KEYS), st.text(max_size=20), st.integers(), st.none(), st.booleans()
)


@settings(PROPERTIES, max_examples=250)
@given(st.dictionaries(config_keys, yaml_values, max_size=8))
def test_any_yaml_mapping_is_a_config_or_an_error_naming_its_key(
    tally: Tally, workdir: Path, raw: dict[Any, Any]
) -> None:
    """Keys of any type (YAML allows 1:, null:, true:), values of any type and size."""
    try:
        config = load(workdir, yaml.safe_dump(raw))
    except ConfigError as exc:
        assert names_a_key(str(exc), [key for key in raw if key in KEYS]), str(exc)
        tally("config mapping refused naming its key")
        return
    tally("config mapping accepted")
    for key in KEYS:
        if key in raw and key != "datasets":
            assert getattr(config, key) == raw[key]


WRONG_TYPES: dict[str, list[Any]] = {
    "bool": [1, 0, "true", "yes", None, [True], 1.0],
    "int": [16.0, 16.5, "16", True, None, [16], float("nan")],
    "number": ["0.1", True, None, [0.1], float("nan"), float("inf"), float("-inf")],
    "str": [1, 1.5, True, None, ["embedded"], {"a": 1}],
}
KINDS = {
    "load_in_8bit": "bool",
    "load_in_4bit": "bool",
    "peft_use_rslora": "bool",
    "train_on_inputs": "bool",
    "gradient_checkpointing": "bool",
    "lora_r": "int",
    "num_epochs": "int",
    "micro_batch_size": "int",
    "gradient_accumulation_steps": "int",
    "warmup_steps": "int",
    "sequence_len": "int",
    "seed": "int",
    "lora_alpha": "number",
    "lora_dropout": "number",
    "val_set_size": "number",
    "learning_rate": "number",
    "weight_decay": "number",
    "cause_loss_weight": "number",
    "base_model": "str",
    "output_dir": "str",
    "adapter": "str",
    "lr_scheduler": "str",
}
OTHER_WRONG: dict[str, list[Any]] = {
    "lora_target_modules": ["q_proj", 5, None, {"q_proj": 1}, [], [1], [["q_proj"]]],
    "datasets": ["x.jsonl", 5, None, [], ["x.jsonl"], [{"type": "chat_template"}], [{"path": 5}]],
    "bf16": [1, 0, 1.0, "yes", None, ["auto"]],
}


@settings(PROPERTIES, max_examples=150)
@given(st.data())
def test_a_valid_config_with_one_value_of_a_wrong_type_is_refused_naming_that_key(
    tally: Tally, workdir: Path, data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(sorted([*KINDS, *OTHER_WRONG])))
    wrong = OTHER_WRONG.get(key) or WRONG_TYPES[KINDS[key]]
    raw = {**VALID, key: data.draw(st.sampled_from(wrong))}
    with pytest.raises(ConfigError) as refused:
        load(workdir, yaml.safe_dump(raw))
    assert names_a_key(str(refused.value), [key]), str(refused.value)
    tally("config wrong type refused")


@settings(PROPERTIES, max_examples=200)
@given(st.text(max_size=300) | st.sampled_from(["[" * 5000, "a: " + "[" * 5000, "- " * 3000]))
def test_any_yaml_text_is_a_config_or_a_config_error(
    tally: Tally, workdir: Path, text: str
) -> None:
    try:
        load(workdir, text)
    except ConfigError as exc:
        assert str(exc)
        tally("config text refused")
        return
    tally("config text accepted")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("lora_alpha: .inf\n", "lora_alpha"),
        ("weight_decay: .inf\n", "weight_decay"),
        ("cause_loss_weight: .inf\n", "cause_loss_weight"),
        ("bf16: 1\n", "bf16"),
    ],
)
def test_values_that_cannot_train_are_refused(workdir: Path, text: str, key: str) -> None:
    """Once accepted: an infinite scale or decay, bf16 given as a number."""
    with pytest.raises(ConfigError, match=rf"{key}="):
        load(workdir, text)


def test_keys_yaml_reads_as_numbers_or_null_are_warned_not_a_crash(workdir: Path) -> None:
    """``1:`` and ``null:`` are keys YAML reads as int and None (sorting them with the
    text keys once raised TypeError)."""
    path = workdir / "keys.yaml"
    path.write_text("1: x\nlora_r: 8\nnull: y\n")
    with pytest.warns(UserWarning) as warned:
        config = TrainConfig.load(path)
    assert config.lora_r == 8
    assert sorted(str(w.message).split(": ")[-1] for w in warned) == [
        "unknown key 1 ignored",
        "unknown key None ignored",
    ]


def test_a_whole_count_too_big_for_a_float_is_a_count(workdir: Path) -> None:
    """It once raised OverflowError."""
    assert load(workdir, f"val_set_size: {'9' * 400}\n").val_set_size == int("9" * 400)


@pytest.mark.parametrize(
    "text",
    ["a: " + "[" * 5000, "- " * 3000 + "x", "lora_r: " + "9" * 5000],
    ids=["deep flow", "deep block", "5000 digits"],
)
def test_yaml_the_parser_cannot_read_is_refused(workdir: Path, text: str) -> None:
    """PyYAML composes recursively (once a RecursionError) and reads integers
    with int() (ValueError past 4300 digits)."""
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(workdir, text)


def test_a_billion_laughs_config_is_refused_quickly(workdir: Path) -> None:
    """YAML aliases nest a value 9**9 times over: refusing it must not print all of it."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    lines.append("lora_r: *a8")
    with pytest.raises(ConfigError, match="lora_r=") as refused:
        load(workdir, "\n".join(lines) + "\n")
    assert len(str(refused.value)) < 2000


def test_a_config_that_is_not_utf8_is_refused(workdir: Path) -> None:
    path = workdir / "latin1.yaml"
    path.write_bytes("output_dir: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        TrainConfig.load(path)


# --------------------------------------------------------------------------- data check

GOOD = [samples.to_sample(s, "generated") for s in generate(3, seed=5)]


@st.composite
def jsonl_lines(draw: st.DrawFn) -> str:
    """A line of a chat JSONL file: a valid sample with fields damaged, any JSON value,
    any text."""
    kind = draw(st.sampled_from(["damaged sample", "damaged sample", "any text", "sample"]))
    if kind == "sample":
        return json.dumps(draw(st.sampled_from(GOOD)))
    if kind == "any text":
        return draw(st.text(max_size=200)).replace("\n", " ").replace("\r", " ")
    body = draw(mutated(draw(st.sampled_from(GOOD))))
    return body.decode("utf-8", "replace").replace("\n", " ")


@settings(PROPERTIES, max_examples=150)
@given(st.lists(jsonl_lines(), min_size=1, max_size=5))
def test_any_jsonl_is_checked_or_refused_naming_the_line(
    tally: Tally, workdir: Path, lines: list[str]
) -> None:
    """Every sample is reported on (an error names its sample), or the file is refused
    with its line."""
    path = workdir / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    try:
        result = check(path)
    except DataError as exc:
        assert re.search(rf"{re.escape(str(path))}:\d+: ", str(exc)), str(exc)
        tally("data file refused naming its line")
        return
    tally("data file checked")
    assert result.samples == sum(1 for line in lines if line.strip())
    for error in result.errors:
        assert re.match(r"sample \d+: .+", error), error
    assert result.render()


@settings(PROPERTIES, max_examples=60)
@given(st.lists(st.sampled_from(GOOD), min_size=1, max_size=3), st.integers(0, 2), st.data())
def test_a_damaged_sample_is_reported_as_that_sample(
    tally: Tally, workdir: Path, good: list[dict[str, Any]], at: int, data: st.DataObject
) -> None:
    """Among good samples, the damaged one gets the errors (its neighbours none, unless
    the damage makes it a duplicate)."""
    rows = [json.dumps(row) for row in good]
    at = min(at, len(rows))
    damaged = data.draw(mutated(data.draw(st.sampled_from(GOOD))))
    rows.insert(at, damaged.decode("utf-8", "replace").replace("\n", " "))
    path = workdir / "damaged.jsonl"
    path.write_text("\n".join(rows) + "\n")
    try:
        result = check(path)
    except DataError as exc:
        assert f"{path}:{at + 1}: " in str(exc), str(exc)
        tally("damaged sample: file refused at its line")
        return
    tally("damaged sample: reported")
    for error in result.errors:
        number = int(error.split(":")[0].removeprefix("sample "))
        assert number == at + 1 or "duplicate" in error, error


@pytest.mark.parametrize(
    "line",
    [
        "1" * 5000,  # an integer past Python's digit limit
        "[" * 100_000,
        '{"messages": 5}',
        '{"messages": [1, 2, 3]}',
        '{"messages": {"role": "user"}}',
        '{"messages": [], "meta": "report"}',
        '{"messages": [], "meta": {"pattern": ["a"]}}',
        '{"messages": [], "meta": {"report": 5}}',
    ],
)
def test_data_lines_that_crashed_the_check_are_reported(tmp_path: Path, line: str) -> None:
    """Each once raised ValueError, RecursionError, TypeError or AttributeError."""
    path = tmp_path / "data.jsonl"
    path.write_text(line + "\n")
    try:
        result = check(path)
    except DataError as exc:
        assert f"{path}:1: " in str(exc)
        return
    assert result.errors and all(e.startswith("sample 1: ") for e in result.errors)


def test_line_separators_inside_json_strings_do_not_split_a_sample(tmp_path: Path) -> None:
    """write_jsonl writes U+2028, U+0085 and form feeds raw (valid in JSON strings);
    read_jsonl once cut lines at them, so a written file did not read back."""
    row = {**GOOD[0], "meta": {**GOOD[0]["meta"], "note": "a\u2028b\x85c\x0cd\x1ce"}}
    path = tmp_path / "data.jsonl"
    samples.write_jsonl(path, [row])
    assert samples.read_jsonl(path) == [row]


def test_a_data_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(json.dumps(GOOD[0]).encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:2: not UTF-8"):
        check(path)


def test_finite_numbers_pass_through_a_valid_config_unchanged(workdir: Path) -> None:
    """The check of finite numbers refuses only what cannot train."""
    config = load(workdir, yaml.safe_dump({**VALID, "weight_decay": 0.01, "lora_alpha": 16}))
    assert math.isclose(config.weight_decay, 0.01) and config.lora_alpha == 16
