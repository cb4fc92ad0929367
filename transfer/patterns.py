r"""Rule patterns and globs: which keys are regular expressions, which patterns are refused
because they can backtrack for hours, and did-you-mean hints for patterns and globs that match
nothing.

A mapping is often written by hand and its source layer names can come from any file, so a
pattern is screened before it is ever matched. Python's `re` backtracks, and cannot be
interrupted while it does, so a pattern is refused when it holds one of the constructs that make
backtracking exponential, or polynomial of a high degree:

- a repetition inside a repetition, `(a+)+`, `(\w*)*x`, `(.*a){20}`;
- a choice between alternatives inside a repetition, `(a|aa)+`, `(a|a)+`, `(block|b+){2,}`
  (alternatives of one character each are a character class to `re`, and are accepted:
  `(a|b)+` is `[ab]+`);
- a run of more than `MAX_RUN` repeated parts that can match the same characters, with nothing
  between them that ends the run: twelve `a*` in a row, `(\w+)_(\w+)_(\w+)_(\w+)` (`\w`
  matches `_`). `features\.(\d+)\.(\d+)\.(\d+)\.(\d+)` is fine: `\d` never matches `.`.

The analysis reads the pattern as `re` itself parses it, so escapes, classes and flags mean
exactly what they mean to the matcher.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import re
import string
import sys
from collections.abc import Sequence
from typing import Any

# The parser `re` compiles with: a private module, stable since Python 3.0 (named `sre_parse`
# up to 3.10, which warns about that name from 3.11 on).
_sre_parse: Any = importlib.import_module("re._parser" if sys.version_info >= (3, 11) else "sre_parse")

# A rule key holding any of these characters is a regular expression; otherwise it is a
# literal layer name (so the dots of `features.0` stay literal).
REGEX_CHARS = frozenset("\\()[]*+?|^${}")
GLOB_CHARS = frozenset("*?[")

MAX_PATTERN_CHARS = 1000  # a rule pattern is a line written by a person
MAX_GROUP_DEPTH = 32  # `re`'s parser recurses once per nested group
MAX_RUN = 3  # repeated parts in a row that can match the same characters: (\w+)_(\w+)_(\w+)

# Characters the overlap analysis reasons about: ASCII and two others stand for the rest.
_ALPHABET = frozenset(string.printable) | {"\x00", "é", "中"}
_CATEGORIES = {"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
               "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W",
               "CATEGORY_LINEBREAK": r"\n", "CATEGORY_NOT_LINEBREAK": r"."}
_REPEATS = ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
_ZERO_WIDTH = ("AT", "ASSERT", "ASSERT_NOT")


def is_regex(key: str) -> bool:
    """A rule key is a regular expression when it holds one of `REGEX_CHARS`."""
    return bool(REGEX_CHARS & set(key))


def pattern_problem(pattern: str) -> str:
    """Why `pattern` is refused as a rule pattern, quoting the part at fault exactly as written;
    '' when it is accepted. Call before `re.compile` (which it may call itself)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return (f"the pattern has {len(pattern):,} characters; a rule pattern may have at most "
                f"{MAX_PATTERN_CHARS:,}.")
    depth = _group_depth(pattern)
    if depth > MAX_GROUP_DEPTH:
        return f"the pattern nests groups {depth} deep; at most {MAX_GROUP_DEPTH} are accepted."
    try:
        parsed = _sre_parse.parse(pattern)
    except (re.error, OverflowError, RecursionError, ValueError):
        return ""  # not a valid pattern: re.compile says why, with its position
    found = _nested_hazard(list(parsed))
    if found:
        kind, _ = found
        part = _smallest_part(pattern, kind)
        where = f" ('{part}')" if part and part != pattern else ""
        if kind == "nested":
            return (f"the pattern '{pattern}' repeats a group that repeats itself{where}; such a pattern "
                    "can take exponential time on a long layer name. Write it without the nested "
                    "repetition (for `(\\w+_)+`, say `[\\w_]+`).")
        return (f"the pattern '{pattern}' repeats a choice between alternatives{where}; such a pattern "
                "can take exponential time on a long layer name. Repeat a character class instead "
                "(`[ab]+` for `(a|b)+`), or write the alternatives out without the repetition.")
    run = _longest_run(list(parsed))
    if run > MAX_RUN:
        return (f"the pattern '{pattern}' has {run} repeated parts in a row that can match the same "
                f"characters (at most {MAX_RUN}); matching it against a long layer name takes time "
                f"of the order of the name's length to the power {run}. Make the parts exclusive "
                "(`(\\d+)_` instead of `(\\w+)_`: `\\w` matches `_` too) or use fewer of them.")
    return ""


def _group_depth(pattern: str) -> int:
    """How deeply the groups of `pattern` nest (escapes and character classes skipped)."""
    depth = deepest = 0
    for char, _ in _structure(pattern):
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth = max(0, depth - 1)
    return deepest


def _structure(pattern: str) -> list[tuple[str, int]]:
    """The unescaped parentheses of `pattern` outside character classes, with their index."""
    found, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if char == "[":  # a class: a `]` right after `[` or `[^` is literal
            index += 1
            if pattern[index: index + 1] == "^":
                index += 1
            if pattern[index: index + 1] == "]":
                index += 1
            while index < len(pattern) and pattern[index] != "]":
                index += 2 if pattern[index] == "\\" else 1
            index += 1
            continue
        if char in "()":
            found.append((char, index))
        index += 1
    return found


def _op(item: tuple[Any, Any]) -> str:
    return str(item[0])


def _repeats(item: tuple[Any, Any]) -> bool:
    """A repetition that gives the matcher a choice of counts, up to more than one."""
    if _op(item) not in _REPEATS:
        return False
    low, high, _ = item[1]
    return bool(high > 1 and low != high)


def _repeated_more_than_once(item: tuple[Any, Any]) -> bool:
    return _op(item) in _REPEATS and item[1][1] > 1


def _children(item: tuple[Any, Any]) -> list[list[tuple[Any, Any]]]:
    """The sub-sequences of one parsed item (groups, alternatives, repetitions, lookarounds)."""
    op, value = _op(item), item[1]
    if op in _REPEATS:
        return [list(value[2])]
    if op == "SUBPATTERN":
        return [list(value[-1])]
    if op in ("ASSERT", "ASSERT_NOT"):
        return [list(value[1])]
    if op == "ATOMIC_GROUP":
        return [list(value)]
    if op == "BRANCH":
        return [list(branch) for branch in value[1]]
    if op == "GROUPREF_EXISTS":
        return [list(part) for part in value[1:] if part is not None]
    return []


def _contains(items: list[tuple[Any, Any]], test: Any) -> bool:
    return any(test(item) or any(_contains(child, test) for child in _children(item)) for item in items)


def _nested_hazard(items: list[tuple[Any, Any]]) -> tuple[str, tuple[Any, Any]] | None:
    """('nested' | 'choice', the item) for the first repetition over a repetition or over a
    choice between alternatives; None when there is none."""
    for item in items:
        if _repeated_more_than_once(item):
            body = _children(item)[0]
            if _contains(body, _repeats):
                return "nested", item
            if _contains(body, lambda child: _op(child) in ("BRANCH", "GROUPREF_EXISTS")):
                return "choice", item
        for child in _children(item):
            found = _nested_hazard(child)
            if found:
                return found
    return None


def _smallest_part(pattern: str, kind: str) -> str:
    """The shortest group of `pattern`, with its quantifier, that shows the `kind` of hazard
    by itself, exactly as written ('' when none does alone)."""
    best = ""
    for start, end in _group_spans(pattern):
        part = pattern[start:end]
        try:
            found = _nested_hazard(list(_sre_parse.parse(part)))
        except (re.error, OverflowError, RecursionError, ValueError):  # a back-reference out of context
            continue
        if found and found[0] == kind and (not best or len(part) < len(best)):
            best = part
    return best


def _group_spans(pattern: str) -> list[tuple[int, int]]:
    """(start, end) of every group, its quantifier included (`(a+)+`, `(.*a){20}`)."""
    quantifier = re.compile(r"(?:[*+?]|\{\d*,?\d*\})[?+]?")
    spans, stack = [], []
    for char, index in _structure(pattern):
        if char == "(":
            stack.append(index)
        elif stack:
            start = stack.pop()
            follower = quantifier.match(pattern, index + 1)
            spans.append((start, follower.end() if follower else index + 1))
    return spans


def _chars(item: tuple[Any, Any]) -> frozenset[str]:
    """The characters (of `_ALPHABET`) one parsed item can match, both cases: conservative."""
    op, value = _op(item), item[1]
    found: set[str] = set()
    if op == "LITERAL":
        found = {chr(value)}
    elif op == "NOT_LITERAL":
        found = set(_ALPHABET) - {chr(value)}
    elif op in ("ANY", "GROUPREF"):  # a back-reference can match whatever its group did
        found = set(_ALPHABET)
    elif op == "IN":
        negate = False
        for member in value:
            name = str(member[0])
            if name == "NEGATE":
                negate = True
            elif name == "LITERAL":
                found.add(chr(member[1]))
            elif name == "RANGE":
                low, high = member[1]
                found |= {c for c in _ALPHABET if low <= ord(c) <= high}
            elif name == "CATEGORY":
                found |= _category(str(member[1]))
        if negate:
            found = set(_ALPHABET) - found
    else:
        for child in _children(item):
            for part in child:
                found |= _chars(part)
    return frozenset(found | {c.swapcase() for c in found})


def _category(name: str) -> set[str]:
    expression = re.compile(_CATEGORIES.get(name, r"[\s\S]"))
    return {c for c in _ALPHABET if expression.fullmatch(c)}


def _longest_run(items: list[tuple[Any, Any]]) -> int:
    """The most repeated parts in a row that can match the same characters: the degree of the
    polynomial a failing match can take."""
    longest = 0
    run, last = 0, frozenset[str]()

    def visit(sequence: list[tuple[Any, Any]]) -> None:
        nonlocal longest, run, last
        for item in sequence:
            op = _op(item)
            if op in _ZERO_WIDTH:
                continue
            if op in ("SUBPATTERN", "ATOMIC_GROUP"):
                visit(_children(item)[0])
                continue
            if op in ("BRANCH", "GROUPREF_EXISTS"):  # the worst alternative counts
                start_run, start_last, best, seen = run, last, run, set(last)
                for branch in _children(item):
                    run, last = start_run, start_last
                    visit(branch)
                    best, seen = max(best, run), seen | last
                run, last = best, frozenset(seen)
                continue
            chars = _chars(item)
            if _repeats(item):
                may_be_empty = item[1][0] == 0
                if run and last & chars:
                    run += 1
                elif not (run and may_be_empty):
                    run = 1
                # a part that may match nothing does not keep the parts on either side of it
                # apart (`\w*_*?\w*`: both `\w*` still meet): what follows may join either
                last = chars | (last if may_be_empty else frozenset())
                longest = max(longest, run)
            elif op in _REPEATS and item[1][0] == 0:
                # optional (`?`): the worst of skipping it and taking it; taking it may add the
                # repeated parts inside it (`(?:[^_]{2,}|b*)?`) to the run
                start_run, start_last = run, last
                visit(_children(item)[0])
                if run < start_run:
                    run, last = start_run, start_last
            elif not last & chars:
                run, last = 0, frozenset()  # a mandatory character the run cannot take ends it

    visit(items)
    return longest


def glob_suggestions(glob: str, names: Sequence[str]) -> list[str]:
    """Globs close to `glob` (its literal start or end replaced by the closest one) that match
    at least one of `names`; for a glob such as `blok*` that matches none of them."""
    return _repaired(glob, names, lambda candidate, name: fnmatch.fnmatchcase(name, candidate),
                     split=_glob_split, escape=lambda text: re.sub(r"([*?\[])", r"[\1]", text))


def glob_hint(glob: str, names: Sequence[str]) -> str:
    """A ' Did you mean ...?' suffix for a glob that matches none of `names`; '' if nothing is close."""
    return _did_you_mean(glob_suggestions(glob, names))


def regex_hint(pattern: str, names: Sequence[str]) -> str:
    """A ' Did you mean ...?' suffix for a rule pattern that matches none of `names` (a typo in
    its literal start, `featurs\\.(\\d+)`): close patterns that match one of them, else the
    closest name; '' when nothing is close."""
    suggestions = _repaired(pattern, names, lambda candidate, name: re.fullmatch(candidate, name) is not None,
                            split=_regex_split, escape=re.escape)
    if suggestions:
        return _did_you_mean(suggestions)
    close = difflib.get_close_matches(pattern, list(names), n=1, cutoff=0.6)
    return f" The closest layer name: {close[0]!r}." if close else ""


def _did_you_mean(suggestions: Sequence[str]) -> str:
    return f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""


def _glob_split(glob: str) -> tuple[str, str, str]:
    """(literal start, the middle as written, literal end) of a glob."""
    first = min((glob.index(c) for c in GLOB_CHARS if c in glob), default=len(glob))
    last = max((glob.rindex(c) for c in GLOB_CHARS if c in glob), default=len(glob) - 1)
    if "[" in glob[first:] and "]" in glob[last:]:
        last = glob.rindex("]")
    return glob[:first], glob[first:last + 1], glob[last + 1:]


def _regex_split(pattern: str) -> tuple[str, str, str]:
    """(literal start unescaped, the rest as written, ''): `featurs\\.(\\d+)` -> 'featurs.', '(\\d+)'."""
    literal, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern) and not pattern[index + 1].isalnum():
            literal.append(pattern[index + 1])
            index += 2
            continue
        if char in REGEX_CHARS or char == ".":
            break
        literal.append(char)
        index += 1
    rest = pattern[index:]
    if rest[:1] in ("*", "+", "?", "{") and literal:  # the last literal is repeated: keep it in the rest
        rest = re.escape(literal.pop()) + rest
    return "".join(literal), rest, ""


def _repaired(pattern: str, names: Sequence[str], matches: Any, split: Any, escape: Any) -> list[str]:
    """The variant of `pattern` with its literal start or end replaced by the closest start or
    end of a name that matches at least one name (a list of one, or empty)."""
    start, middle, end = split(pattern)
    found: list[tuple[bool, float, str]] = []
    for side, literal in (("start", start), ("end", end)):
        if len(literal) < 2:
            continue
        pieces = set()
        for name in names:
            for size in (len(literal) - 1, len(literal), len(literal) + 1):
                if 0 < size <= len(name):
                    pieces.add(name[:size] if side == "start" else name[-size:])
        for piece in difflib.get_close_matches(literal, sorted(pieces), n=6, cutoff=0.6):
            candidate = escape(piece) + middle + end if side == "start" else start + middle + escape(piece)
            if candidate != pattern and any(matches(candidate, name) for name in names):
                shorter = len(piece) < len(literal)  # a letter missing is rarer than one mistyped
                found.append((shorter, -difflib.SequenceMatcher(None, literal, piece).ratio(), candidate))
    found.sort()
    return list(dict.fromkeys(candidate for *_, candidate in found))[:1]


def unused_entry_notes(section: str, entries: Sequence[str], names: Sequence[str],
                       leftover: Sequence[str]) -> list[str]:
    """Notes for `skip` / `untouched` entries (globs) that match none of `names`, each with the
    closest of `leftover` (the layers left undeclared: source layers no rule matched, target
    layers left at their initial values) when one is close: a typo `fuze` next to `fuse`."""
    unused = [entry for entry in entries if not any(fnmatch.fnmatchcase(name, entry) for name in names)]
    if not unused:
        return []
    what = "which no rule matched" if section == "skip" else "which is left undeclared"
    described = []
    for entry in unused:
        if GLOB_CHARS & set(entry):
            close = glob_suggestions(entry, leftover)[:1]
        else:
            close = difflib.get_close_matches(entry, list(leftover), n=1, cutoff=0.6)
        described.append(f"{entry} (did you mean '{close[0]}', {what}?)" if close else entry)
    where = "this source" if section == "skip" else "this target"
    return [f"{section} entries absent from {where}: {', '.join(described)}"]
