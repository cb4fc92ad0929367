"""The report is data: `ok` follows from the checks, the JSON keys are the documented ones,
and the two renderers are pure functions of the report."""

from __future__ import annotations

import json

from transfer.report import (
    LayerCheck,
    Report,
    SkippedLayer,
    TransferredLayer,
    UntouchedLayer,
    Verification,
    error_dict,
    summary,
    to_dict,
    to_json,
)

DOCUMENTED_KEYS = {"mapping", "source", "target", "transferred", "skipped", "untouched", "frozen", "params_moved",
                   "preprocessing", "notes", "warnings", "checked_only", "output", "mapping_sha256",
                   "source_sha256", "tensor_sha256", "verification", "versions", "ok", "coverage", "verified_only",
                   "model_coverage", "unproven"}


def report(*checks: LayerCheck) -> Report:
    row = TransferredLayer("features.0", "block1_conv1", "conv2d", "OIHW -> HWIO", 1792,
                           {"source": [[64, 3, 3, 3], [64]], "target": [[3, 3, 3, 64], [64]]})
    return Report("m.yaml", "src", "tgt", transferred=[row], skipped=[SkippedLayer("fc", "declared in skip", True)],
                  untouched=[UntouchedLayer("head", False)], params_moved=1792,
                  verification=[Verification("in memory", list(checks))])


def test_ok_is_derived_from_the_checks() -> None:
    good = LayerCheck("a", "b", "conv2d on a probe", 1e-7, 1e-8, 1e-5)
    bad = LayerCheck("c", "d", "conv2d on a probe", 0.5, 0.2, 1e-5)
    assert report(good).ok and to_dict(report(good))["ok"] is True
    assert not report(good, bad).ok and to_dict(report(good, bad))["ok"] is False
    assert to_dict(report(good, bad))["verification"][0]["layers"][1]["ok"] is False


def test_json_has_the_documented_keys_and_round_trips() -> None:
    data = json.loads(to_json(report()))
    assert set(data) == DOCUMENTED_KEYS
    assert data["transferred"][0] == {"source": "features.0", "target": "block1_conv1", "kind": "conv2d",
                                      "conversion": "OIHW -> HWIO", "params": 1792, "notes": [], "adapted": None,
                                      "inputs": None, "assumptions": [], "changed": None,
                                      "shapes": {"source": [[64, 3, 3, 3], [64]], "target": [[3, 3, 3, 64], [64]]}}
    assert data["skipped"] == [{"layer": "fc", "reason": "declared in skip", "declared": True}]


def test_summary_names_undeclared_layers_and_the_worst_check() -> None:
    text = summary(report(LayerCheck("a", "b", "m", 1e-7, 3e-6, 1e-5)))
    assert "moved 1 layers (1,792 parameters) from src into tgt" in text
    assert "left 1 target layer(s) at their initial values, NOT DECLARED: head" in text
    assert "verified (in memory): 1/1 layers within 1e-05 (worst 3e-06)" in text


def test_failed_verification_message_lists_every_failed_check() -> None:
    checks = [LayerCheck(f"s{i}", f"t{i}", "tensors compared", 1.0, 1.0, 0.0) for i in range(3)]
    message = Verification("converted model", checks).error_message("m.yaml")
    assert message.startswith("m.yaml: verification failed (converted model): first diverging layer 't0'")
    assert "3 check(s) failed" in message and "'t2' (from 's2'" in message


def test_a_long_failure_list_says_how_many_more_the_report_has() -> None:
    checks = [LayerCheck(f"s{i}", f"t{i}", "tensors compared", 1.0, 1.0, 0.0) for i in range(26)]
    message = Verification("converted model", checks).error_message("m.yaml")
    assert "26 check(s) failed" in message and "'t20' (from 's20'" in message and "'t21'" not in message
    assert message.endswith("and 5 more (see --report)")


def test_unproven_layers_are_never_counted_as_verified() -> None:
    from transfer.report import Proof

    checks = [LayerCheck("a", "b", "dense on a probe", 0.0, 0.0, 1e-5), LayerCheck("c", "d", "m", 0.0, 0.0, 1e-5)]
    data = report(*checks)
    data.coverage = [Proof("a", "b", ("dense on a probe",), ("source flatten order declared",)),
                     Proof("c", "d", ("m",))]
    text = summary(data)
    assert "verified (in memory): 1/2 layers (1 UNPROVEN)" in text
    assert "UNPROVEN: 1 moved layer(s)" in text and "'b' (from 'a'): source flatten order declared" in text
    assert to_dict(data)["unproven"] == ["b"] and to_dict(data)["coverage"][1]["proven"] is True


def test_an_all_zero_reference_is_compared_by_absolute_difference() -> None:
    from transfer.verify import relative_difference

    assert relative_difference([0.0, 0.0], [0.0, 0.5]) == (0.5, 0.5)  # not 0.5 / 1e-30
    check = LayerCheck("a", "b", "m", 0.5, 0.5, 1e-5, zero_reference=True)
    assert "absolute difference (the reference is all zeros) 0.5" in check.describe()


def test_error_dict_for_ci() -> None:
    assert error_dict(ValueError("boom"), 5) == {"ok": False, "exit_code": 5, "error_type": "ValueError", "error": "boom"}
