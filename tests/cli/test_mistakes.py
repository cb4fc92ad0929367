"""Issue 20, "mistakes met with help": each mistake a new user made gets a message that says what
was meant. A skip entry, a source pattern or an untouched/freeze glob with a typo gets a
did-you-mean; a YAML error is reported on the line that holds it, with the parser's context; a
file that cannot be read is exit 5 whichever file it is.

The skip, untouched and source-pattern hints are computed by `transfer.patterns`; the plan
(transfer/plan.py) calls them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import transfer
from conftest import MAPPINGS
from transfer.cli import main
from transfer.errors import MappingError
from transfer.mapping import load_mapping
from transfer.patterns import glob_hint, regex_hint, unused_entry_notes

HED = (MAPPINGS / "unet_vgg16_hed.yaml").read_text()


def hed_variant(tmp_path: Path, old: str, new: str) -> Path:
    assert old in HED
    path = tmp_path / "hed.yaml"
    path.write_text(HED.replace(old, new))
    return path


def test_the_hints_themselves() -> None:
    assert unused_entry_notes("skip", ["fuze", "dsn*"], ["dsn1", "fuse"], ["fuse"]) == [
        "skip entries absent from this source: fuze (did you mean 'fuse', which no rule matched?)"]
    assert unused_entry_notes("untouched", ["dek*", "head"], ["dec4_conv1", "head"], ["dec4_conv1"]) == [
        "untouched entries absent from this target: dek* (did you mean 'dec*', which is left undeclared?)"]
    assert unused_entry_notes("skip", ["fuse"], ["fuse"], []) == []
    assert glob_hint("blok*", ["block1_conv1", "dec4_conv1"]) == " Did you mean 'block*'?"
    assert regex_hint(r"featurs\.(\d+)", ["features.0", "classifier.0"]) == " Did you mean 'features\\\\.(\\\\d+)'?"
    assert regex_hint(r"blok(\d)/conv2d", ["block1/conv2d", "dsn1"]) == " Did you mean 'block(\\\\d)/conv2d'?"
    assert regex_hint(r"zzz(\d)", ["block1/conv2d"]) == ""


def test_a_skip_entry_with_a_typo_names_the_layer_it_meant(tmp_path: Path) -> None:
    """`fuze` for `fuse` passed with exit 0, printing 'NO RULE MATCHED: fuse' and 'skip entries
    absent from this source: fuze' without linking them."""
    path = hed_variant(tmp_path, "skip: ['dsn*', fuse]", "skip: ['dsn*', fuze]")
    report = transfer.transfer_weights(path, check=True).report
    assert "skip entries absent from this source: fuze (did you mean 'fuse', which no rule matched?)" in report.notes


def test_a_source_pattern_with_a_typo_gets_a_did_you_mean(tmp_path: Path) -> None:
    path = hed_variant(tmp_path, "'block(\\d)/conv2d_1'", "'blok(\\d)/conv2d_1'")
    with pytest.raises(MappingError, match=re.escape("the pattern 'blok(\\d)/conv2d_1' matches no weighted layer")
                       + ".*" + re.escape("Did you mean 'block(\\\\d)/conv2d_1'?")):
        transfer.transfer_weights(path, check=True)


def test_an_untouched_glob_with_a_typo_names_the_glob_it_meant(tmp_path: Path) -> None:
    path = hed_variant(tmp_path, "untouched: ['dec*', head]", "untouched: ['dek*', head]")
    report = transfer.transfer_weights(path, check=True).report
    assert "untouched entries absent from this target: dek* (did you mean 'dec*', which is left undeclared?)" \
        in report.notes


def test_a_freeze_glob_with_a_typo_gets_a_did_you_mean(tmp_path: Path) -> None:
    path = hed_variant(tmp_path, "freeze: ['block*']", "freeze: ['blok*']")
    with pytest.raises(MappingError, match=re.escape("freeze pattern 'blok*' matches no weighted target layer. "
                                                     "Did you mean 'block*'?")):
        transfer.transfer_weights(path, check=True)


def test_a_yaml_error_is_reported_on_its_line_with_the_parsers_context(tmp_path: Path) -> None:
    """An unclosed flow sequence on line 22 was reported at line 23, and PyYAML's 'while parsing
    a flow sequence ... line 22, column 7' was dropped."""
    path = hed_variant(tmp_path, "skip: ['dsn*', fuse]", "skip: ['dsn*', fuse")
    line = HED.splitlines().index("skip: ['dsn*', fuse]          # HED's side outputs and fusion layer "
                                  "have no U-Net counterpart") + 1
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert str(info.value) == (
        f"{path}:{line}: not valid YAML: while parsing a flow sequence that starts at line {line}, column 7: "
        f"expected ',' or ']', but got '<scalar>' (line {line + 1}, column 1). Is a closing ']' missing on line {line}?")


@pytest.mark.parametrize("text, line, words", [
    ("format: 1\nsource: 'unclosed\n", 2, ("while scanning a quoted scalar that starts at line 2, column 9: "
                                          "found unexpected end of stream")),
    ("format: 1\nsource:\n  framework: keras\n model: vgg16\n", 4, ("expected <block end>, but found '<block "
                                                                   "mapping start>' (line 4, column 2)")),
    ("format: 1\nlayers: {a: b\nskip: [x]\n", 2, "while parsing a flow mapping that starts at line 2, column 9"),
])
def test_other_yaml_errors_say_where_and_what(text: str, line: int, words: str) -> None:
    with pytest.raises(MappingError) as info:
        load_mapping(text)
    assert str(info.value).startswith(f"<mapping>:{line}: not valid YAML: ") and words in str(info.value)


@pytest.mark.parametrize("make, message", [
    (lambda folder: folder / "absent.yaml", "absent.yaml: no such mapping file"),
    (lambda folder: folder, "is not a file; expected a mapping file (YAML) or the name of a shipped mapping"),
], ids=["missing", "a-folder"])
def test_a_mapping_file_that_cannot_be_read_is_exit_5_like_any_file(make, message: str, tmp_path: Path,
                                                                   capsys) -> None:
    """A missing mapping file exited 3 where a missing weights file exits 5."""
    assert main(["--map", str(make(tmp_path)), "--check"]) == 5
    err = capsys.readouterr().err
    assert err.startswith("transfer-weights: error: ") and message in err and "Traceback" not in err
