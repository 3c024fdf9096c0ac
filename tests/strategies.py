"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

from hypothesis import strategies as st

names = st.text(
    alphabet=st.sampled_from("ab Zé\u00fc\u4e2d\U0001f600-_."), min_size=1, max_size=4
).filter(lambda n: n not in (".", ".."))

contents = st.one_of(
    st.text(max_size=20),
    st.binary(max_size=20),
    st.sampled_from(["", b"", "same", b"same"]),
)

trees = st.recursive(
    contents,
    lambda children: st.dictionaries(names, children, max_size=4),
    max_leaves=12,
).filter(lambda t: isinstance(t, dict))


def write_tree(fs, path: str, tree: dict) -> None:
    fs.makedirs(path)
    for name, value in tree.items():
        child = f"{path}/{name}"
        if isinstance(value, dict):
            write_tree(fs, child, value)
        else:
            fs.writefile(child, value)
