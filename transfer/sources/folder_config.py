"""The preprocessing a Hugging Face or timm checkpoint folder declares: `config.json`
(`pretrained_cfg` or top-level `mean`/`std`/`input_size`, as timm writes it) or
`preprocessor_config.json` (`image_mean`/`image_std`/`size`, as transformers writes it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transfer.errors import CheckpointError

# the conventions this tool names, as mean/std on inputs scaled to [0, 1]
KNOWN = {"torch": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "tf": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


def folder_preprocessing(folder: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(the named convention or None, what the folder's config says) for a checkpoint folder."""
    for name, keys in (("config.json", ("mean", "std", "input_size")),
                       ("preprocessor_config.json", ("image_mean", "image_std", "size"))):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not readable JSON: {exc}.") from exc
        if not isinstance(data, dict):
            continue
        nested = data.get("pretrained_cfg")
        section: dict[str, Any] = nested if isinstance(nested, dict) else data
        mean, std = section.get(keys[0]), section.get(keys[1])
        if not (isinstance(mean, list) and isinstance(std, list) and _triple(mean) and _triple(std)):
            continue
        detail = {"file": name, "mean": list(mean), "std": list(std), "input_size": section.get(keys[2])}
        named = next((label for label, (m, s) in KNOWN.items()
                      if all(abs(a - b) < 1e-3 for a, b in zip([*mean, *std], [*m, *s]))), None)
        return named, detail
    return None, None


def _triple(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)
