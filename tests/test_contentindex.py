"""The target's content index agrees with a plain dict model under any mix of operations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from merkle_sync.contentindex import _Table

ops = st.lists(
    st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 40), st.integers(0, 5)),
    max_size=3000,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_table_matches_a_multimap(operations):
    table, model = _Table(), {}
    for op, key, ref in operations:
        key = key * 7919 + 2  # spread, and never the two reserved values
        if op == "add" and ref not in model.get(key, set()):
            table.add(key, ref)
            model.setdefault(key, set()).add(ref)
        elif op == "remove":
            table.remove(key, ref)
            model.get(key, set()).discard(ref)
            if key in model and not model[key]:
                del model[key]
    for key in range(2, 41 * 7919 + 2, 7919):
        assert set(table.get(key)) == model.get(key, set())
    assert table.count == len(model)


def test_many_copies_of_one_key_stay_cheap():
    table = _Table()
    for ref in range(100_000):  # a file of zeros: one leaf hash, many places
        table.add(12345, ref)
    assert len(table.keys) == 1024 and len(table.get(12345)) == 100_000
    for ref in range(100_000):
        table.remove(12345, ref)
    assert table.get(12345) == [] and table.count == 0 and not table.extra
