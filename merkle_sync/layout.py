"""Whether an apply frame's operations make sense in order, against the target's tree (pure).

Checked before anything is written, so a frame either lands whole or changes nothing: every
removal names something there, every new directory's parent is (or becomes) a directory,
every file goes into a directory, metadata goes to something that exists, and no path is
too long for the target's own location.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from merkle_sync.merkle import DirNode, lookup
from merkle_sync.protocol import MAX_PATH_BYTES, Apply, ProtocolError


def check_layout(tree: DirNode, target_dir: str, req: Apply, open_path: str | None) -> None:
    """Raise ``ProtocolError`` unless every operation of ``req`` can be applied in order;
    ``open_path`` is a file still being staged from an earlier frame."""
    removed: set[str] = set()
    made: set[str] = set()

    known: dict[str, bool] = {}  # gone() by path, once ``removed`` is complete

    def gone(rel: str) -> bool:
        """Whether ``rel`` or a directory above it is removed. Each path is answered once
        (after the removals are checked), so a deep chain of directories costs its length,
        not its cube (a 7 kB frame of 1,500 nested names took 6 s)."""
        chain = []
        while rel and rel not in known:
            chain.append(rel)
            rel = rel.rpartition("/")[0]
        hit = known.get(rel, False)
        for path in reversed(chain):
            hit = hit or path in removed
            known[path] = hit
        return hit

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
        known.clear()  # answers given before this removal may have changed
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


def check_excluded(
    ignore: Callable[[str, bool], bool],
    req: Apply,
    tree: DirNode,
    dir_there: Callable[[str], bool],
) -> None:
    """Raise ``ProtocolError`` if ``req`` touches a path the target excludes, or one below
    an excluded directory: the source leaves out the same paths, so no sync sends these,
    and the target's excluded entries are left alone (the scan never saw what it would
    replace). Cost: one ``ignore`` call per path, and one per directory above them."""
    dirs: dict[str, bool] = {"": False}

    def excluded(rel: str, is_dir: bool) -> bool:
        if ignore(rel, is_dir):
            return True
        chain, at = [], posixpath.dirname(rel)
        while at not in dirs:
            chain.append(at)
            at = posixpath.dirname(at)
        hit = dirs[at]
        for d in reversed(chain):
            hit = dirs[d] = hit or ignore(d, True)
        return hit

    # A file written where the target holds a directory (``dir_there``) is tested as one:
    # ``cache/`` excludes that directory, which the write would have to replace.
    paths = [(r, True) for r in req.mkdirs] + [(w.path, False) for w in req.writes]
    paths += [(w.path, True) for w in req.writes if ignore(w.path, True) and dir_there(w.path)]
    made = set(req.mkdirs)  # removals and metadata: as what the target holds there
    for rel in (*req.removes, *(a.path for a in req.attrs)):
        paths.append((rel, rel in made or isinstance(lookup(tree, rel), DirNode)))
    for rel, is_dir in paths:
        if excluded(rel, is_dir):
            raise ProtocolError(f"{rel!r} is excluded on this target")
