"""Shared by tests, benchmarks and the demo: a metered RPC link and tree snapshots."""

from __future__ import annotations

import pickle
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from merkle_sync.protocol import RESERVED


@dataclass
class MeteredRpc:
    """Pickles both ways as the seed task's wrapper does, and counts what crosses."""

    handle: Callable[[Any], Any]
    bytes_up: int = 0
    bytes_down: int = 0
    round_trips: int = 0
    log: list[tuple[str, int, int]] = field(default_factory=list)

    def __call__(self, request: Any) -> Any:
        up = pickle.dumps(request)
        response = self.handle(pickle.loads(up))
        down = pickle.dumps(response)
        self.bytes_up += len(up)
        self.bytes_down += len(down)
        self.round_trips += 1
        self.log.append((type(request).__name__, len(up), len(down)))
        return pickle.loads(down)

    @property
    def total(self) -> int:
        return self.bytes_up + self.bytes_down

    def reset(self) -> None:
        self.bytes_up = self.bytes_down = self.round_trips = 0
        self.log.clear()


def snapshot(fs: Any, path: str) -> dict[str, Any]:
    """Every path below ``path`` with its kind and exact content (``None`` for directories).

    The reserved name at the root (the target's private state) is not part of a mirror.
    """
    out: dict[str, Any] = {}

    def walk(p: str, rel: str) -> None:
        for name in fs.listdir(p):
            if not rel and name == RESERVED:
                continue
            child, crel = posixpath.join(p, name), posixpath.join(rel, name) if rel else name
            if fs.isdir(child):
                out[crel] = None
                walk(child, crel)
            else:
                out[crel] = fs.readfile(child)

    walk(path, "")
    return out


def same_tree(fs_a: Any, a: str, fs_b: Any, b: str) -> bool:
    """Equal names, kinds and contents, with ``str`` and ``bytes`` kept apart."""
    sa, sb = snapshot(fs_a, a), snapshot(fs_b, b)
    return sa.keys() == sb.keys() and all(type(sa[k]) is type(sb[k]) and sa[k] == sb[k] for k in sa)
