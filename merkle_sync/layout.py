"""Whether an apply frame's operations make sense in order, against the target's tree (pure).

Checked before anything is written, so a frame either lands whole or changes nothing: every
removal names something there, every new directory's parent is (or becomes) a directory,
every file goes into a directory, metadata goes to something that exists, and no path is
too long for the target's own location.
"""

from __future__ import annotations

import posixpath

from merkle_sync.merkle import DirNode, lookup, split
from merkle_sync.protocol import MAX_PATH_BYTES, Apply, ProtocolError


def check_layout(tree: DirNode, target_dir: str, req: Apply, open_path: str | None) -> None:
    """Raise ``ProtocolError`` unless every operation of ``req`` can be applied in order;
    ``open_path`` is a file still being staged from an earlier frame."""
    removed: set[str] = set()
    made: set[str] = set()

    def gone(rel: str) -> bool:
        parts = split(rel)
        return any("/".join(parts[: i + 1]) in removed for i in range(len(parts)))

    def is_dir(rel: str) -> bool:
        if rel in made or not rel:
            return True
        return not gone(rel) and isinstance(lookup(tree, rel), DirNode)

    def exists(rel: str) -> bool:
        return rel in made or (not gone(rel) and lookup(tree, rel) is not None)

    room = MAX_PATH_BYTES - len(target_dir.encode("utf-8", "surrogateescape")) - 1
    for rel in (*req.mkdirs, *(w.path for w in req.writes)):
        if len(rel.encode("utf-8", "surrogatepass")) >= room:  # PATH_MAX on the target
            raise ProtocolError(f"{rel!r} is too long a path below this target")
    for rel in req.removes:
        if not exists(rel):
            raise ProtocolError(f"cannot remove {rel!r}: nothing is there")
        removed.add(rel)
    for rel in req.mkdirs:
        if exists(rel) or not is_dir(posixpath.dirname(rel)):
            raise ProtocolError(f"cannot make directory {rel!r}")
        made.add(rel)
    for w in req.writes:
        if is_dir(w.path) or not is_dir(posixpath.dirname(w.path)):
            raise ProtocolError(f"cannot write file {w.path!r}")
    written = {w.path for w in req.writes}
    for attr in req.attrs:
        if not (exists(attr.path) or attr.path in written) or attr.path == open_path:
            raise ProtocolError(f"cannot set metadata of {attr.path!r}: nothing is there")
