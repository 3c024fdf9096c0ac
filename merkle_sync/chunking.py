"""Content-defined cut points and the keyed hashes of leaves and inner nodes (pure, no I/O).

Leaf boundaries come from FastCDC; parent boundaries come from the leaf hashes themselves
(bup's hashsplit fanout, in :mod:`merkle_sync.contenttree`). Boundaries and hashes are wire
format: ``tests/test_chunking.py`` pins them with fixed vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from blake3 import blake3
from pyfastcdc import FastCDC

#: Leaf chunks (FastCDC 2020, normalized chunking 2): about 9 KiB on average. Smaller leaves
#: make small edits cheaper but cost one blake3 call each: 2 KiB leaves hash and chunk at
#: 0.8-0.9 GB/s here, 8 KiB leaves at 1.3-1.4 GB/s (see README). Sub-chunks recover the
#: precision: a changed leaf is refined against the old leaf the target holds.
CHUNK_AVG = 8192
CHUNK_MIN = 1024
CHUNK_MAX = 32768
#: Sub-chunks of a changed leaf, computed only on demand.
SUB_AVG = 256
SUB_MIN = 64
SUB_MAX = 1024
#: Bytes read per call while streaming a file through the chunker: large enough that the
#: per-call cost vanishes, small enough that memory never depends on the file's size.
READ_WINDOW = 4 << 20

HASH_CONTEXT = "merkle_sync 2026-11 "
LEAF_KEY = blake3(derive_key_context=HASH_CONTEXT + "leaf").digest()
NODE_KEY = blake3(derive_key_context=HASH_CONTEXT + "node").digest()

_CHUNKER = FastCDC(CHUNK_AVG, min_size=CHUNK_MIN, max_size=CHUNK_MAX, normalized_chunking=2)
_SUB_CHUNKER = FastCDC(SUB_AVG, min_size=SUB_MIN, max_size=SUB_MAX, normalized_chunking=0)

Reader = Callable[[int, int], bytes]  # (offset, length) -> at most length bytes; b"" at EOF


def leaf_hash(data: bytes | memoryview) -> bytes:
    """Domain-separated from inner nodes so a leaf can never pose as a list of hashes."""
    return blake3(data, key=LEAF_KEY).digest()


def node_hash(children: bytes | memoryview) -> bytes:
    """An inner node commits to its children's hashes, packed in order."""
    return blake3(children, key=NODE_KEY).digest()


def sub_chunks(data: bytes | memoryview) -> list[tuple[bytes, int, int]]:
    """``(leaf hash, start, end)`` of the small chunks of one leaf, for refining a change."""
    if not len(data):
        return []
    return [(leaf_hash(c.data), c.offset, c.offset + c.length) for c in _SUB_CHUNKER.cut_buf(data)]


def cut_leaves(data: bytes | memoryview) -> Iterator[tuple[bytes, int]]:
    """``(leaf hash, length)`` of each leaf of an in-memory buffer."""
    for c in _CHUNKER.cut_buf(memoryview(data)) if len(data) else ():
        yield blake3(c.data, key=LEAF_KEY).digest(), c.length


def stream_leaves(read: Reader, window: int = READ_WINDOW) -> Iterator[tuple[bytes, int]]:
    """The same leaves as :func:`cut_leaves` of the whole content, read ``window`` at a time.

    FastCDC decides a cut from at most ``CHUNK_MAX`` bytes after the chunk's start, so every
    chunk that starts at least that far before the end of the window is final; the rest of
    the window is carried into the next one. Memory stays ``window + CHUNK_MAX``.
    """
    assert window >= CHUNK_MAX
    carry = b""
    offset = 0
    eof = False
    while not eof:
        more = read(offset, window)
        offset += len(more)
        eof = len(more) < window  # a reader returns less only at the end: no extra call
        buf = carry + more if carry else more
        if not buf:
            return
        view = memoryview(buf)
        done = 0
        for c in _CHUNKER.cut_buf(view):
            if not eof and len(buf) - c.offset < CHUNK_MAX:
                break
            yield blake3(c.data, key=LEAF_KEY).digest(), c.length
            done = c.offset + c.length
        carry = buf[done:]
        view.release()
