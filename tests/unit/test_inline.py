"""The helpers written twice for speed, held to one behaviour: each C helper of _inline.pxd
(through the compiled loop's `_inline_*` probes) against the plain-Python version the pure loop
runs (`_exchange.py`, `_http.py`), on the same inputs. A C helper that drifts from its twin fails here
rather than as a response only one loop sends."""

import importlib
import sys

import pytest
from hypothesis import given, settings, strategies as st

compiled = pytest.importorskip("fastcluster._parser", reason="the compiled loop is not built")
exchange = importlib.import_module("fastcluster._exchange")
http = importlib.import_module("fastcluster._http")

lines_ = st.lists(st.binary(max_size=40), max_size=6)
maybe = st.one_of(st.none(), st.binary(max_size=30))


def test_plain_versions_are_the_ones_the_pure_loop_runs():
    # (the shared sources define them only uncompiled: imported as plain Python here)
    for module, name in ((exchange, "_join_head"), (exchange, "_same_text"), (exchange, "_with_tail"),
                         (http, "_del_first")):
        assert callable(getattr(module, name)), "%s.%s" % (module.__name__, name)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=20), lines_, maybe, maybe, maybe, st.binary(max_size=8), maybe)
def test_join_head(status, lines, a, b, c, end, tail):
    assert compiled._inline_join_head(status, lines, a, b, c, end, tail) == \
        exchange._join_head(status, lines, a, b, c, end, tail)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=60), st.integers(0, 60), maybe)
def test_with_tail(joined, size, tail):
    size = min(size, len(joined))
    assert compiled._inline_with_tail(joined, size, tail) == exchange._with_tail(joined, size, tail)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=12), st.text(max_size=12))
def test_same_text(a, b):
    assert compiled._inline_same_text(a, b) == exchange._same_text(a, b)
    # equal text in different objects, and each width CPython stores (1, 2 and 4 bytes a character)
    for text in (a, "é" + a, "€" + a, "\U0001F600" + a):
        copy = "".join(list(text))
        assert compiled._inline_same_text(text, copy) and exchange._same_text(text, copy)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.integers(), min_size=1, max_size=10))
def test_del_first(items):
    ours, theirs = [object()] + items, [object()] + items
    first = ours[0]
    before = sys.getrefcount(first)
    compiled._inline_del_first(ours)
    http._del_first(theirs)
    assert ours == theirs == items
    assert sys.getrefcount(first) == before - 1      # the removed item is released, once
