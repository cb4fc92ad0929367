"""The package's layering, enforced: an import graph built from the code's text (imports inside
functions count, and so does a module named in a string, as `importlib.import_module` takes it),
with no cycle, and every import pointing down (or across) the layers written here and in
docs/development.md. A new module must be placed in a layer; that is the point."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "transfer"

# lower number: more basic. A module may import modules of its own layer or below.
LAYERS: dict[int, tuple[str, ...]] = {
    0: ("_version", "errors", "buffers", "checksums", "flatten_order", "layers", "layout", "rearrange", "patterns", "progress",
        "report", "shipped", "resample", "archive", "formats", "output", "sources.known_models", "targets.vgg16_layout",
        "targets._checks"),
    1: ("_frameworks", "mapping_yaml", "mapping_types", "kinds", "kinds.base", "kinds.conv", "kinds.dense", "kinds.norm", "kinds.scale", "kinds.attention",
        "mapping", "bands"),
    2: ("targets.keras_applications", "targets.keras_efficientnet_lite", "targets.keras_pooling",
        "targets.keras_resnet", "targets.keras_segnet", "targets.keras_unet", "targets.keras_unet_convnext",
        "targets.keras_vit", "targets.keras_setr", "targets.torch_resnet", "targets.torch_segnet", "targets.torch_torchvision",
        "targets.torch_vit", "targets.torch_vgg"),
    3: ("adapter", "keras_models", "keras_memory", "torch_models", "written", "live", "sources.folder_config", "sources.keras_files",
        "sources.onnx_files", "sources.onnx_flatten", "sources.torch_files", "sources", "composed"),
    4: ("dense_inputs", "plan", "runners", "verify", "reporting", "engine", "suggest", "resolve", "inspection", "targets",
        "band_check"),
    5: ("api", "cli", ""),  # "": the package itself, transfer/__init__.py
}
LAYER_NAMES = {0: "core", 1: "kinds, mapping, frameworks", 2: "builders", 3: "adapters and formats",
               4: "pipeline", 5: "entry points"}


def module_names() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts).removesuffix("__init__").rstrip(".")
        found[name] = path
    return found


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """Modules of this package that `name` imports, anywhere in its text."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(dotted: str) -> None:
        inner = dotted.removeprefix("transfer").lstrip(".")
        if dotted.startswith("transfer") and inner in modules and inner != name \
                and not name.startswith(inner + ".") and not (inner == "" and name):
            found.add(inner)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = ["transfer", *package.split(".")] if package else ["transfer"]
                base_parts = base_parts[: len(base_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            subs = [f"{base}.{alias.name}" for alias in node.names
                    if f"{base}.{alias.name}".removeprefix("transfer").lstrip(".") in modules]
            for dotted in subs if len(subs) == len(node.names) else [base, *subs]:
                add(dotted)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("transfer."):
            add(node.value)  # imported by name
    return found


def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def test_every_module_has_a_layer() -> None:
    placed = [m for names in LAYERS.values() for m in names]
    assert len(placed) == len(set(placed)), "a module is placed twice"
    assert set(module_names()) == set(placed), "place new modules in LAYERS (and docs/development.md)"


def test_imports_point_down_the_layers() -> None:
    layer = {m: n for n, names in LAYERS.items() for m in names}
    upward = [f"{m or 'transfer'} ({LAYER_NAMES[layer[m]]}) imports {i} ({LAYER_NAMES[layer[i]]})"
              for m, targets in graph().items() for i in sorted(targets) if layer[i] > layer[m]]
    assert not upward, "\n".join(upward)


def test_no_import_cycles() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert not cycles, cycles


def test_the_graph_sees_imports_inside_functions_and_by_name(tmp_path: Path) -> None:
    """The test's own reader, on a small text: a function-level import and a by-name one count."""
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from transfer import plan\n    importlib.import_module('transfer.verify')\n")
    assert imports_of("x", path, {"plan", "verify", "x"}) == {"plan", "verify"}
