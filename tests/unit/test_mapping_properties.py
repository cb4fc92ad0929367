"""Property tests: the mapping parser returns a Mapping or raises MappingError, nothing else,
whatever it is fed (random YAML text, random nested data, mutations of a valid mapping)."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_mapping import GOOD

from transfer.errors import MappingError
from transfer.mapping import Mapping, load_mapping

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["keras", "torch", "imagenet", "vgg16", "(", "\\1"]))
data = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)), max_leaves=20)
GOOD_DATA = yaml.safe_load(GOOD)


def parses_or_says_why(value: object) -> None:
    try:
        assert isinstance(load_mapping(value), Mapping)
    except MappingError as exc:
        assert str(exc)  # a message, never an empty error


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200))
def test_any_text(text: str) -> None:
    parses_or_says_why(text + "\n")  # a newline: always read as YAML text, never as a path


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(st.sampled_from(list(GOOD_DATA) + ["x"]), data, max_size=6))
def test_any_structure(value: dict) -> None:
    parses_or_says_why(value)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(list(GOOD_DATA)), replacement=data)
def test_one_key_of_a_valid_mapping_replaced(key: str, replacement: object) -> None:
    parses_or_says_why({**GOOD_DATA, key: replacement})


@settings(max_examples=200, deadline=None)
@given(rules=st.dictionaries(st.text(max_size=10), st.one_of(st.text(max_size=10), data), min_size=1, max_size=5))
def test_any_rules(rules: dict) -> None:
    parses_or_says_why({**GOOD_DATA, "layers": rules})
