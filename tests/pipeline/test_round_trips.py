"""scripts/round_trips.py (issue 21) kept working: one architecture both ways, bit for bit (the
whole script, every reversible shipped pair, runs in CI: .ci/run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "round_trips.py"


def test_resnet50_round_trips_are_bit_identical(capsys) -> None:
    spec = importlib.util.spec_from_file_location("round_trips", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--only", "resnet50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("resnet50            keras -> torch -> keras: 320 tensors of 107 layers bit-identical")
    assert lines[1].startswith("resnet50            torch -> keras -> torch: 267 tensors of 107 layers bit-identical")
    assert lines[-1].startswith("all round trips bit-identical")
