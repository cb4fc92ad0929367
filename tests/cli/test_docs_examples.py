"""The documentation's examples run: every fenced block after a `<!-- runnable -->` line in
README.md and docs/*.md is executed (`pytest -m docs`, as CI does), a page's blocks in order in
one empty folder, bash blocks through bash and python blocks through this interpreter, on the
offline HED route or on files the blocks make. A block after `<!-- output -->` holds what the
runnable block before it prints: each of its lines appears in the output, in order (`...`
stands for anything; a line that is only `...` for any lines).

The cheap checks run in the default suite: the blocks are found and well formed, and the
development page's module map names every module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
MARKERS = ("<!-- runnable -->", "<!-- output -->")


@dataclass
class Block:
    page: Path
    line: int
    kind: str  # "runnable" or "output"
    lang: str
    text: str
    output: Block | None = field(default=None, repr=False)


def blocks(page: Path) -> list[Block]:
    """The marked fenced blocks of a page, each output block attached to the runnable before it."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    pending: str | None = None
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        if stripped in MARKERS:
            pending = stripped[5:-4]
            index += 1
            continue
        opening = FENCE.match(lines[index])
        if opening and pending:
            end = index + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            assert end < len(lines), f"{page.name}:{index + 1}: a fenced block that never closes"
            body = "\n".join(line[len(opening["indent"]):] for line in lines[index + 1:end]) + "\n"
            block = Block(page, index + 1, pending, opening["lang"], body)
            if pending == "output":
                assert found and found[-1].kind == "runnable" and found[-1].output is None, \
                    f"{page.name}:{index + 1}: an output block must follow a runnable block"
                found[-1].output = block
            else:
                found.append(block)
            pending, index = None, end + 1
            continue
        if stripped and pending:
            raise AssertionError(f"{page.name}:{index + 1}: <!-- {pending} --> must be followed by a fenced block")
        index += 1
    return found


RUNNABLE = {page.name: blocks(page) for page in PAGES}


def test_runnable_blocks_are_found_and_well_formed() -> None:
    every = [block for found in RUNNABLE.values() for block in found]
    assert len(every) >= 8 and {b.lang for b in every} == {"bash", "python"}
    assert RUNNABLE["README.md"], "the README's main job is a runnable example"
    for block in every:
        assert "http://" not in block.text and "https://" not in block.text, f"{block.page.name}:{block.line}: offline"
        if block.lang == "python":
            compile(block.text, f"{block.page.name}:{block.line}", "exec")


def test_the_module_map_names_every_module() -> None:
    """The development page's map drifted before (no inspection.py, no ONNX): it is checked."""
    text = (ROOT / "docs" / "development.md").read_text()
    start = text.index("## Where things are")
    listing = text[start:text.index("## ", start + 3)]
    for path in sorted((ROOT / "transfer").glob("*.py")):
        assert re.search(rf"^  {re.escape(path.name)} ", listing, re.M), f"{path.name} missing from the module map"
    for path in sorted((ROOT / "transfer" / "sources").glob("*.py")):
        if path.name != "__init__.py":
            assert path.name in listing, f"sources/{path.name} missing from the module map"
    for path in sorted((ROOT / "transfer" / "kinds").glob("*.py")):
        if path.name != "__init__.py":
            assert path.name in listing, f"kinds/{path.name} missing from the module map"
    listed = re.findall(r"^  ([a-z_]+\.py) ", listing, re.M)  # and every module listed exists
    assert listed and all((ROOT / "transfer" / name).is_file() for name in listed), \
        [name for name in listed if not (ROOT / "transfer" / name).is_file()]


def test_the_readme_is_a_front_page() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 12 * 1024, f"README.md has {size:,} bytes; the front page keeps to 12 KB (the reference is docs/)"


def test_the_payoff_table_in_the_docs_is_the_recorded_one() -> None:
    """docs/measurements.md shows every cell of scripts/results/payoff_sweep.json, as
    `payoff_sweep.py --record` wrote its table (payoff_sweep.md; that test checks JSON -> table)."""
    recorded = (ROOT / "scripts" / "results" / "payoff_sweep.md").read_text().splitlines()
    docs = (ROOT / "docs" / "measurements.md").read_text().splitlines()
    missing = [row for row in recorded if row not in docs]
    assert not missing, f"docs/measurements.md lacks the recorded payoff rows: {missing}"


def matches(expected: str, actual: str) -> bool:
    """Each expected line appears in `actual`'s lines in order; `...` inside a line is a wildcard."""
    actual_lines = actual.splitlines()
    position = 0
    for wanted in expected.splitlines():
        if not wanted.strip() or wanted.strip() == "...":
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in wanted.strip().split("...")))
        while position < len(actual_lines) and not pattern.search(actual_lines[position]):
            position += 1
        if position == len(actual_lines):
            return False
        position += 1
    return True


def run_block(block: Block, folder: Path) -> str:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("CI", None)
    if block.lang == "bash":
        command = ["bash", "-c", "set -euo pipefail\n" + block.text]
    else:
        command = [sys.executable, "-c", block.text]
    done = subprocess.run(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)  # one stream: the order a reader sees
    output = done.stdout
    assert done.returncode == 0, f"{block.page.name}:{block.line}: exit {done.returncode}\n{output[-3000:]}"
    return output


@pytest.mark.docs
@pytest.mark.parametrize("page", [name for name, found in RUNNABLE.items() if found])
def test_the_runnable_examples_of_a_page_run(page: str, tmp_path: Path) -> None:
    for block in RUNNABLE[page]:
        output = run_block(block, tmp_path)
        if block.output is not None:
            assert matches(block.output.text, output), (
                f"{page}:{block.line}: the output documented at line {block.output.line} is not what it prints:\n"
                f"{output[-3000:]}")


def test_the_output_matcher() -> None:
    assert matches("a ... c\n...\nlast\n", "x\na b c\nmiddle\nlast\n")
    assert not matches("last\na b c\n", "a b c\nlast\n")  # order matters
    assert not matches("missing\n", "a\nb\n")
