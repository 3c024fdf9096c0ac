"""merkle_sync: one-way directory replication over Merkle trees and content-defined chunks."""

__version__ = "0.2.0"

from merkle_sync.checks import Refused
from merkle_sync.fs import FileSystem, FileSystemEvent, FileSystemEventType
from merkle_sync.memfs import MemoryFileSystem
from merkle_sync.protocol import ProtocolError
from merkle_sync.source import ReplicatorSource, SyncError
from merkle_sync.target import ReplicatorTarget

__all__ = [
    "FileSystem",
    "FileSystemEvent",
    "FileSystemEventType",
    "MemoryFileSystem",
    "ProtocolError",
    "Refused",
    "ReplicatorSource",
    "ReplicatorTarget",
    "SyncError",
]
