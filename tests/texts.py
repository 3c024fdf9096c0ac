"""Source-like text and edits of it, shared by the delta and refinement tests."""

from __future__ import annotations

import random

#: A short hash no test's content has, and the filesystem calls that change a tree.
H8 = b"\x01" * 8
MUTATIONS = ("writefile", "removefile", "removedir", "makedir", "makedirs")


def source_text(size: int, seed: int = 1) -> str:
    """Words repeat, as in source code: the old version of a file holds most of a changed
    leaf, and a few bytes' edit is all that differs."""
    rng = random.Random(seed)
    words = [
        "".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 9))) for _ in range(500)
    ]
    out = " ".join(rng.choice(words) for _ in range(size // 3))
    assert len(out) >= size
    return out[:size]


def edited(text: str, at: int, patch: str = "EDIT", insert: bool = False) -> str:
    """``patch`` written over ``text`` at ``at`` (or inserted there)."""
    return text[:at] + patch + text[at + (0 if insert else len(patch)) :]
