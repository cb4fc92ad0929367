"""Every shipped mapping, through one parametrised test: it parses and validates, names a source
and a target framework, and its rule patterns pass the backtracking screen. (Each is converted
and verified end to end by the CI job, scripts/ci_convert_all.py, and the classifiers by
scripts/prove_architectures.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from transfer.mapping import load_mapping

MAPPINGS = sorted((Path(__file__).resolve().parents[2] / "mappings").glob("*.yaml"))


@pytest.mark.parametrize("path", MAPPINGS, ids=[p.stem for p in MAPPINGS])
def test_a_shipped_mapping_loads_and_validates(path: Path) -> None:
    mapping = load_mapping(path)
    assert mapping.origin == str(path) and mapping.sha256
    assert mapping.target.framework in ("keras", "torch")
    assert mapping.rules, "a shipped mapping moves something"


def test_there_are_shipped_mappings() -> None:
    assert len(MAPPINGS) >= 20
