"""The mapping file parser: every shipped mapping loads; every malformed one gets an error
naming the file, the line and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import MAPPINGS
from transfer.errors import CheckpointError, MappingError
from transfer.mapping import Rule, is_declared, load_mapping

GOOD = """\
format: 1
source: {framework: keras, model: vgg16, weights: imagenet}
target: {framework: keras, model: unet_vgg16, config: {classes: 3}}
layers:
  block1_conv1: block1_conv1
  'block(\\d)_conv(\\d)': 'enc\\1_conv\\2'
  features.0: {target: block1_conv2, flatten: [512, 7, 7], epsilon: rescale}
skip: [fc1, 'fc*']
freeze: ['block*']
"""


@pytest.mark.parametrize("path", sorted(MAPPINGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_mapping_loads(path: Path) -> None:
    mapping = load_mapping(path)
    assert mapping.rules and mapping.path == path and len(mapping.sha256) == 64


def test_rules_literal_pattern_and_options() -> None:
    mapping = load_mapping(GOOD)
    literal, pattern, dotted = mapping.rules
    assert not literal.is_pattern and literal.target_for("block1_conv1") == "block1_conv1"
    assert literal.target_for("block1_conv10") is None
    assert pattern.is_pattern and pattern.target_for("block3_conv2") == "enc3_conv2"
    assert pattern.target_for("block3_conv2x") is None  # whole-name match only
    assert not dotted.is_pattern and dotted.target_for("features.0") == "block1_conv2"
    assert dotted.target_for("featuresX0") is None  # the dot is literal
    assert dotted.flatten == (512, 7, 7) and dotted.epsilon == "rescale"
    assert (pattern.line, dotted.line) == (6, 7)
    assert mapping.target.config == {"classes": 3}


def test_globs_for_skip_and_freeze() -> None:
    assert is_declared("fc2", ("fc*",)) and not is_declared("xfc2", ("fc*",))


def _error(text: str) -> str:
    with pytest.raises(MappingError) as info:
        load_mapping(text)
    return str(info.value)


@pytest.mark.parametrize("broken, expected", [
    ("format: 1\nsource: [unclosed\n", ("<mapping>:2: not valid YAML: while parsing a flow sequence that starts at "
                                        "line 2, column 9: expected ',' or ']', but got '<stream end>' (line 3, column 1). "
                                        "Is a closing ']' missing on line 2?")),
    (GOOD.replace("format: 1", "format: 2"), "format: expected 1; received 2"),
    (GOOD.replace("skip:", "skipp:"), "skipp: unknown key. Did you mean 'skip'?"),
    (GOOD.replace("framework: keras, model: vgg16", "framework: jax, model: vgg16"),
     "source.framework: expected one of keras, torch; received 'jax'"),
    (GOOD.replace("freeze: ['block*']", "freeze: block"), "freeze: expected a list"),
    (GOOD.replace("'enc\\1_conv\\2'", "'enc\\3_conv'"), "uses group \\3, but the pattern has 2"),
    (GOOD.replace("'block(\\d)_conv(\\d)'", "'block(\\d_conv'"), "not a valid regular expression"),
    (GOOD.replace("flatten: [512, 7, 7]", "flatten: [512, 7]"), "flatten: expected [channels, height, width]"),
    (GOOD.replace("epsilon: rescale", "epsilon: ignore"), "epsilon: expected one of match, rescale"),
    (GOOD.replace("config: {classes: 3}", "config: [3]"), "target.config: expected a mapping"),
    (GOOD.replace("skip:", "  block1_conv1: block2_conv1\nskip:"),
     "<mapping>:8: key 'layers.block1_conv1' appears twice (first on line 5)"),
    ("format: 1\nsource: !!python/object/apply:os.system [ls]\n", "not a plain-data YAML document"),
    ("- just\n- a list\n", "expected a mapping with keys"),
    (GOOD.replace("layers:\n", "layers: {}\nx:\n"), "x: unknown key"),
], ids=["yaml", "format", "did-you-mean", "framework", "type", "group", "regex", "flatten",
        "epsilon", "config", "duplicate-rule", "python-tag", "not-a-mapping", "unknown-top"])
def test_malformed_mappings_say_where_and_what(broken: str, expected: str) -> None:
    assert expected in _error(broken)


def test_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("format: 1", "format: 'one'"))
    message = _error(str(path))
    assert message.startswith(f"{path}:1: format: expected 1")


def test_a_missing_mapping_file_is_a_file_error_exit_5(tmp_path: Path) -> None:
    """A file that cannot be read is exit 5, whichever file it is (it was 3 for a mapping)."""
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'absent.yaml'}: no such mapping file") as info:
        load_mapping(str(tmp_path / "absent.yaml"))
    assert info.value.exit_code == 5
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="is not a file"):
        load_mapping(str(folder))


def test_rule_objects_are_plain_data() -> None:
    rule = Rule(source="a", target="b", is_pattern=False)
    assert rule.target_for("a") == "b" and rule.flatten == "auto"


@pytest.mark.parametrize("section, expected", [
    ("source: {framework: kears, model: vgg16}", "source.framework: expected one of keras, torch; received 'kears'. Did you mean 'keras'?"),
    ("source: {framework: keras, model: vgg16, preprocessing: cafe}", "Did you mean 'caffe'?"),
])
def test_closed_sets_get_a_did_you_mean(section: str, expected: str) -> None:
    text = f"format: 1\n{section}\ntarget: {{framework: keras, model: unet_vgg16}}\nlayers: {{}}\n"
    with pytest.raises(MappingError, match=re.escape(expected)):
        load_mapping(text)


def test_a_shortened_builder_name_gets_a_did_you_mean() -> None:
    from transfer.mapping import did_you_mean

    assert did_you_mean("unet", ["unet_vgg16", "segnet_vgg16", "vgg16"]) == " Did you mean 'unet_vgg16'?"
    assert did_you_mean("xyz", ["unet_vgg16"]) == ""

