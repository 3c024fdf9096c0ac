"""A third-party filesystem with its own event classes: only the contract is relied on."""

from __future__ import annotations

import enum
import posixpath

from merkle_sync import ReplicatorSource, ReplicatorTarget
from merkle_sync.testing import MeteredRpc, same_tree


class TheirEventType(enum.Enum):  # deliberately not our IntEnum, and not comparable to it
    CREATED = 1
    DELETED = 2
    CHANGED = 3


class TheirEvent:
    def __init__(self, path, event_type):
        self.path = path
        self.event_type = event_type


_DIR = object()


class FlatFileSystem:
    """Stores a flat path -> content map; shares no code or base class with merkle_sync."""

    def __init__(self):
        self.items = {"/": _DIR}
        self.watchers = {}
        self.writes = 0

    def exists(self, path):
        return path in self.items

    def isfile(self, path):
        return self.items[path] is not _DIR

    def isdir(self, path):
        return self.items[path] is _DIR

    def readfile(self, path):
        return self.items[path]

    def writefile(self, path, content):
        assert self.items[posixpath.dirname(path)] is _DIR
        assert self.items.get(path) is not _DIR
        self.writes += 1
        self.items[path] = content

    def removefile(self, path):
        assert self.items[path] is not _DIR
        del self.items[path]

    def listdir(self, path):
        prefix = path.rstrip("/") + "/"
        return [
            p[len(prefix) :]
            for p in self.items
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        ]

    def makedir(self, path):
        assert self.items[posixpath.dirname(path)] is _DIR
        self.items.setdefault(path, _DIR)

    def makedirs(self, path):
        if path not in self.items:
            self.makedirs(posixpath.dirname(path))
            self.items[path] = _DIR

    def removedir(self, path):
        for p in [p for p in self.items if p == path or p.startswith(path + "/")]:
            del self.items[p]

    def watchdir(self, path, callback):
        self.watchers[path] = callback

    def unwatchdir(self, path):
        del self.watchers[path]

    def debug_string(self, path):
        return "\n".join(sorted(p for p in self.items if p.startswith(path)))

    def fire(self, path, event_type):
        self.watchers[posixpath.dirname(path)](TheirEvent(path, event_type))


def test_third_party_filesystem_and_events():
    fs = FlatFileSystem()
    fs.makedirs("/src/docs")
    fs.makedirs("/dst")
    fs.writefile("/src/readme", "hello")
    fs.writefile("/src/docs/a", "a")
    target = ReplicatorTarget(fs, "/dst")
    ReplicatorSource(fs, "/src", MeteredRpc(target.handle_request))
    assert same_tree(fs, "/src", fs, "/dst")
    assert set(fs.watchers) == {"/src", "/src/docs"}

    fs.writefile("/src/docs/a", "a, edited")
    fs.fire("/src/docs/a", TheirEventType.CHANGED)
    fs.makedirs("/src/new/deeper")
    fs.writefile("/src/new/deeper/b", "b")
    fs.fire("/src/new", TheirEventType.CREATED)
    assert same_tree(fs, "/src", fs, "/dst")
    assert set(fs.watchers) == {"/src", "/src/docs", "/src/new", "/src/new/deeper"}

    fs.removedir("/src/docs")
    fs.fire("/src/docs", TheirEventType.DELETED)
    assert same_tree(fs, "/src", fs, "/dst")
    assert set(fs.watchers) == {"/src", "/src/new", "/src/new/deeper"}
    assert isinstance(fs.readfile("/dst/new/deeper/b"), str)
