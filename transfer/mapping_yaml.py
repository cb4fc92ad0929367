"""Reading a mapping's text, bounded: a file read at most `MAX_BYTES` far, the YAML nesting
measured on the token stream before the parser recurses, the document's size after alias
expansion measured before anything walks it, and errors on the line that holds the mistake
with the parser's context. `transfer.mapping` validates what this returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from transfer.errors import CheckpointError, MappingError

MAX_BYTES = 1 << 20  # 1 MiB of text
MAX_NODES = 100_000  # YAML nodes after alias expansion (a billion-laughs document has 10**9)
MAX_DEPTH = 32  # nesting of mappings and lists


def read_mapping_file(path: Path) -> str:
    """The text of a mapping file, read at most MAX_BYTES + 1 bytes far (a 50 MB file costs no
    more memory than a 1 MiB one)."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the mapping file: {exc.strerror or exc}.") from exc
    if len(raw) > MAX_BYTES:
        raise MappingError(f"{path}: more than {MAX_BYTES:,} bytes; a mapping file may have at most "
                           f"{MAX_BYTES:,}.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MappingError(f"{path}:{line}: the mapping file is not UTF-8 text ({exc.reason} at byte "
                           f"{exc.start:,}).") from exc


def parse_yaml(text: str, origin: str) -> tuple[dict[tuple[str, ...], int], Any]:
    """Line numbers of every key, and the plain data. The nesting depth is measured on the
    token stream before the composer (which recurses once per level) sees the text; the
    document's size after alias expansion is measured before anything walks it."""
    _check_depth(text, origin)
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses control characters at once
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, origin) from exc
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, origin) from exc
        if root is None:
            return {}, None
        _check_size(root, origin)
        lines = _key_lines(root, origin)
        try:
            data = loader.construct_document(root)
        except yaml.YAMLError as exc:  # e.g. a python/object tag, which the safe loader refuses
            raise MappingError(f"{origin}: not a plain-data YAML document: {exc}.") from exc
    finally:
        loader.dispose()
    return lines, data


_OPENS = (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken, yaml.BlockSequenceStartToken,
          yaml.BlockMappingStartToken)
_CLOSES = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken, yaml.BlockEndToken)


def _check_depth(text: str, origin: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the tokens alone: the scanner does not recurse,
    and stops being asked at the first level too deep, so `[[[[...` 10**5 deep costs a few
    dozen tokens (and the scanner's look-ahead of at most 1024 characters). A sequence written
    at its key's indentation has no start token; it is counted exactly by `_check_size` later,
    the composer's recursion staying bounded either way. A text the scanner cannot read is left
    to the parser, which says where. (libyaml's scanner, through PyYAML's C loader, yields a
    different token stream for the same text: the pure-Python one is used.)"""
    scanner = yaml.SafeLoader
    depth = 0
    try:
        for token in yaml.scan(text, Loader=scanner):
            if isinstance(token, _OPENS):
                depth += 1
                if depth - 1 > MAX_DEPTH:  # the top-level collection is depth 0
                    raise MappingError(f"{origin}:{token.start_mark.line + 1}: nested deeper than "
                                       f"{MAX_DEPTH} levels; a mapping file is refused past that.")
            elif isinstance(token, _CLOSES):
                depth -= 1
    except yaml.YAMLError:
        return


def _yaml_error(exc: yaml.YAMLError, origin: str) -> MappingError:
    """PyYAML's error as one line: where (its marks are 0-based), what, and the construct it
    was reading. An unclosed flow collection is reported on the line that opened it."""
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        return MappingError(f"{origin}: not valid YAML: the character {exc.character:#06x} (at character "
                            f"{exc.position:,}) is not allowed in a YAML document.")
    problem = getattr(exc, "problem", None)
    if problem is None:
        return MappingError(f"{origin}: not valid YAML: {' '.join(str(exc).split())}.")
    problem_mark, context_mark = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
    context = getattr(exc, "context", None)

    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    text = f"{problem}" + (f" ({at(problem_mark)})" if problem_mark is not None else "")
    line = problem_mark.line + 1 if problem_mark is not None else None
    hint = ""
    if context and context_mark is not None:
        text = f"{context} that starts at {at(context_mark)}: {text}"
        if not context.startswith("while parsing a block"):  # a flow collection, a quote, a key
            line = context_mark.line + 1
        for name, closer in (("flow sequence", "]"), ("flow mapping", "}")):
            if name in context:
                hint = f" Is a closing '{closer}' missing on line {context_mark.line + 1}?"
    return MappingError(f"{origin}{f':{line}' if line else ''}: not valid YAML: {text}.{hint}")


def _key_lines(root: yaml.Node, origin: str) -> dict[tuple[str, ...], int]:
    """Line numbers of every mapping key; also rejects duplicate keys, which YAML would
    silently collapse (two rules for one source layer must be an error)."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    where = ".".join(prefix + (key,))
                    raise MappingError(
                        f"{origin}:{line}: key '{where}' appears twice (first on line "
                        f"{seen[key]}); each key may appear once."
                    )
                seen[key] = line
                lines[prefix + (key,)] = line
                walk(value_node, prefix + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[prefix + (str(index),)] = item.start_mark.line + 1
                walk(item, prefix + (str(index),))

    walk(root, ())
    return lines


def _check_size(root: yaml.Node, origin: str) -> None:
    """Refuse documents whose aliases expand past MAX_NODES nodes or that nest deeper than
    MAX_DEPTH, before anything walks them. Sizes are memoised per node, so a document of
    nested aliases costs its own size to measure, not its expansion."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise MappingError(f"{origin}:{node.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels.")
        if id(node) in sizes:
            return sizes[id(node)]
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_NODES:
                raise MappingError(f"{origin}: the document expands to more than {MAX_NODES:,} "
                                   "values (aliases of aliases?); a mapping file is refused past that.")
        sizes[id(node)] = total
        return total

    size(root, 0)
