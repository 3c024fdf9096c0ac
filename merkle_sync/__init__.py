"""merkle_sync: one-way directory replication over Merkle trees and content-defined chunks."""

__version__ = "0.4.0"

#: The public names and the modules that define them, imported on first use: the command
#: starts its target's process before it loads the engine (``cli.main``), and a plain
#: ``import merkle_sync.cli`` stays cheap.
_PUBLIC = {
    "FileSystem": "merkle_sync.fs",
    "FileSystemEvent": "merkle_sync.fs",
    "FileSystemEventType": "merkle_sync.fs",
    "MemoryFileSystem": "merkle_sync.memfs",
    "ProtocolError": "merkle_sync.protocol",
    "Refused": "merkle_sync.checks",
    "ReplicatorSource": "merkle_sync.source",
    "ReplicatorTarget": "merkle_sync.target",
    "SyncError": "merkle_sync.races",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> object:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'merkle_sync' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
