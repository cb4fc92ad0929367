"""Exit 1 is always a bug: the command line over every class of bad input in the docs' table
(docs/bad-input.md) gives its documented exit code, a one-paragraph error (no traceback), a JSON report
saying why, and no output file. Tiny models keep each case fast."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.checkpoints import tiny_keras, tiny_torch, write_legacy_h5
from transfer.cli import main

TINY = {"c1": "c1", "bn": "bn", "c2": "c2", "fc": "fc"}


def mapping(folder: Path, source: str, target: str = "keras", layers: str | None = None, extra: str = "") -> Path:
    path = folder / "m.yaml"
    rules = layers if layers is not None else "{c1: c1, bn: bn, c2: c2, fc: fc}"
    path.write_text(f"format: 1\nsource: {source}\ntarget: {{framework: {target}, model: tiny, config: {{seed: 2}}}}\n"
                    f"layers: {rules}\n{extra}")
    return path


def factory(framework: str) -> list[str]:
    return ["--target-factory", f"helpers.checkpoints:tiny_{framework}"]


def keras_h5(folder: Path) -> Path:
    return write_legacy_h5(tiny_keras(1), folder / "tiny.h5")


def torch_pth(folder: Path, legacy: bool = False) -> Path:
    import torch

    path = folder / ("legacy.pth" if legacy else "tiny.pth")
    torch.save(tiny_torch(1).state_dict(), path, _use_new_zipfile_serialization=not legacy)
    return path


def cut(path: Path, size: int) -> Path:
    bad = path.with_name("cut-" + path.name)
    bad.write_bytes(path.read_bytes()[:size])
    return bad


def keras_source(path: Path) -> str:
    return f"{{framework: keras, weights: {path}}}"


def torch_source(path: Path) -> str:
    return f"{{framework: torch, weights: {path}}}"


def run_keras(folder: Path, weights: Path, **kw: str) -> list[str]:
    return ["--map", str(mapping(folder, keras_source(weights), **kw)), *factory("keras")]


def run_torch(folder: Path, weights: Path, **kw: str) -> list[str]:
    return ["--map", str(mapping(folder, torch_source(weights), target="torch", **kw)), *factory("torch")]


def _nan_h5(f: Path) -> list[str]:
    import h5py

    path = keras_h5(f)
    with h5py.File(path, "r+") as file:
        dataset = file["fc"][file["fc"].attrs["weight_names"][0]]
        dataset[0, 0] = float("nan")
    return run_keras(f, path)


def _unsafe_keras(f: Path) -> list[str]:
    tiny_keras(1).save(f / "tiny.keras")
    shutil.copy(f / "tiny.keras", f / "bad.keras")
    with zipfile.ZipFile(f / "bad.keras", "a") as archive:
        archive.writestr("../escape.txt", b"x")
    return run_keras(f, f / "bad.keras")


def _evil_pth(f: Path) -> list[str]:
    import torch

    torch.save({"c1.weight": torch.zeros(4, 3, 3, 3), "hook": Payload()}, f / "evil.pth")
    return run_torch(f, f / "evil.pth")


class Payload:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def _converted_wrong(f: Path) -> list[str]:
    source, converted = torch_pth(f), f / "converted.pth"
    import torch

    torch.save(tiny_torch(3).state_dict(), converted)  # right architecture, other values
    return ["verify", "--map", str(mapping(f, torch_source(source), target="torch")), "--target", str(converted),
            *factory("torch")]


def _converted_other_architecture(f: Path) -> list[str]:
    import torch

    torch.save({"x.weight": torch.zeros(2, 2)}, f / "converted.pth")
    return ["verify", "--map", str(mapping(f, torch_source(torch_pth(f)), target="torch")),
            "--target", str(f / "converted.pth"), *factory("torch")]


def _cross_epsilon(f: Path) -> list[str]:
    """torch BatchNorm (eps 1e-5) into Keras' (eps 1e-3): refused unless `epsilon: rescale`."""
    return ["--map", str(mapping(f, torch_source(torch_pth(f)))), *factory("keras")]


CASES: dict[str, tuple[Callable[[Path], list[str]], int]] = {
    "malformed YAML": (lambda f: ["--map", str(_text(f, "format: 1\nsource: {framework: keras\n"))], 3),
    "unknown key (did-you-mean)": (lambda f: run_keras(f, keras_h5(f), extra="skpi: []\n"), 3),
    "unknown source layer": (lambda f: run_keras(f, keras_h5(f), layers="{c9: c1}"), 3),
    "unknown target layer": (lambda f: run_keras(f, keras_h5(f), layers="{c1: c9}"), 3),
    "two sources into one target": (lambda f: run_keras(f, keras_h5(f), layers="{c1: c1, c2: c1}"), 3),
    "alias bomb in the mapping": (lambda f: ["--map", str(_text(f, _bomb()))], 3),
    "pattern that backtracks": (lambda f: run_keras(f, keras_h5(f), layers="{'(c+)+1': c1}"), 3),
    "unknown --target-factory": (lambda f: ["--map", str(mapping(f, keras_source(keras_h5(f)))),
                                            "--target-factory", "helpers.checkpoints:nothing"], 3),
    "shape mismatch": (lambda f: run_keras(f, keras_h5(f), layers="{c1: c2}"), 4),
    "BatchNorm epsilon differs": (_cross_epsilon, 4),
    "NaN in a source tensor": (_nan_h5, 4),
    "--strict with an undeclared skip": (lambda f: run_keras(f, keras_h5(f), layers="{c1: c1}") + ["--strict"], 4),
    "missing source file": (lambda f: run_keras(f, f / "absent.h5"), 5),
    "not a weights file": (lambda f: run_keras(f, _text(f, "hello", "notes.h5")), 5),
    "truncated legacy .h5": (lambda f: run_keras(f, cut(keras_h5(f), 900)), 5),
    "truncated zip .pth": (lambda f: run_torch(f, cut(torch_pth(f), 300)), 5),
    "truncated legacy-pickle .pth": (lambda f: run_torch(f, cut(torch_pth(f, legacy=True), 30)), 5),
    ".keras with a member named ../x": (_unsafe_keras, 5),
    ".pth whose pickle would run code": (_evil_pth, 5),
    "unknown output suffix": (lambda f: run_keras(f, keras_h5(f)) + ["--out", str(f / "out.txt")], 5),
    "missing output folder": (lambda f: run_keras(f, keras_h5(f)) + ["--out", str(f / "no" / "out.keras")], 5),
    "verify: converted file of another architecture": (_converted_other_architecture, 5),
    "verify: converted values differ": (_converted_wrong, 6),
    # issue 19, findings 4 and 5; issue 20: one exit code for a file that cannot be read, shipped names
    "mapping nested 10**5 deep": (lambda f: ["--map", str(_text(f, "format: 1\nskip: " + "[" * 10**5 + "\n"))], 3),
    "pattern with a choice under a quantifier": (lambda f: run_keras(f, keras_h5(f), layers="{'(c|cc)+1': c1}"), 3),
    "twelve repeated parts in a row": (lambda f: run_keras(f, keras_h5(f), layers="{'" + "c*" * 12 + "1': c1}"), 3),
    "--target-factory that raises": (lambda f: ["--map", str(mapping(f, keras_source(keras_h5(f)))),
                                               "--target-factory", "helpers.checkpoints:raising_factory"], 8),
    "missing mapping file": (lambda f: ["--map", str(f / "absent.yaml")], 5),
    "unknown shipped mapping name": (lambda f: ["--map", "unet_vgg16_hd"], 3),
}


def _text(folder: Path, text: str, name: str = "m.yaml") -> Path:
    (folder / name).write_text(text)
    return folder / name


def _bomb() -> str:
    lines = ["format: 1", "a0: &a0 [x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_its_exit_code_and_no_traceback(case: str, tmp_path: Path, capsys) -> None:
    make, expected = CASES[case]
    argv = make(tmp_path)
    report = tmp_path / "report.json"
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main([*argv, "--report", str(report)])
    err = capsys.readouterr().err
    assert code == expected, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.startswith("transfer-weights: error: ") and len(err.strip().splitlines()) <= 30
    assert json.loads(report.read_text())["exit_code"] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "report.json"])  # no output file


def test_check_with_verify_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main([*run_keras(tmp_path, keras_h5(tmp_path)), "--check", "--verify"])
    assert caught.value.code == 2
