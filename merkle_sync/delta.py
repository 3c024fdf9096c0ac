"""A file's new version as a zstd delta against an old version both sides hold (pure).

This is ``zstd --patch-from``: the old bytes are a raw-content dictionary, so everything the
new version shares with it, down to a few bytes, is a match rather than a literal. Chunk
deltas only find shared pieces of at least a sub-chunk (256 bytes) and must name them by
hash; on an edited source file a patch is several times smaller (issue 11 measured 20 kB of
patches where the chunk delta sent 309 kB of literals). The cost is memory (both versions
whole, on both sides), so only files up to ``DELTA_MAX`` go this way.

Nothing in a delta is trusted: the target checks the frame's declared size before
decompressing, bounds the output by it, and the file hash checks the result.
"""

from __future__ import annotations

import zstandard

from merkle_sync.protocol import DELTA_MAX, ProtocolError

#: zstd level of a delta, by the number of files a sync sends as deltas: level 19 made the
#: 83 deltas of a pip upgrade (1.7 MB of new versions) in 0.15 s; a sync of many thousands
#: of edited files must not spend minutes on a few percent.
DELTA_LEVEL = 19
_LEVELS = ((256, 19), (4096, 12), (1 << 62, 6))


def delta_level(files: int) -> int:
    return next(level for limit, level in _LEVELS if files < limit)


def _dictionary(old: bytes) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def make_delta(old: bytes, new: bytes, level: int = DELTA_LEVEL) -> bytes:
    """A zstd frame of ``new`` that only a decoder holding ``old`` can expand."""
    if len(old) > DELTA_MAX or len(new) > DELTA_MAX:
        raise ValueError("deltas are for files of at most DELTA_MAX bytes")
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        source_size=len(new),
        # The window must reach back over the whole old version (as --patch-from sets it).
        window_log=max(10, min(21, (len(old) + len(new)).bit_length())),
        write_checksum=0,
        write_dict_id=0,
        write_content_size=1,
    )
    compressor = zstandard.ZstdCompressor(compression_params=params, dict_data=_dictionary(old))
    return compressor.compress(new)


def apply_delta(old: bytes, delta: bytes | memoryview, size: int) -> bytes:
    """The new version, exactly ``size`` bytes, or a ``ProtocolError``."""
    if len(old) > DELTA_MAX or not 0 <= size <= DELTA_MAX:
        raise ProtocolError("a delta's file exceeds DELTA_MAX")
    try:
        declared = zstandard.frame_content_size(bytes(delta[:18]))
    except zstandard.ZstdError as exc:
        raise ProtocolError(f"broken delta: {exc}") from exc
    if declared != size:
        raise ProtocolError(f"a delta declares {declared} bytes, its write {size}")
    decoder = zstandard.ZstdDecompressor(dict_data=_dictionary(old), max_window_size=1 << 22)
    try:
        new = decoder.decompress(bytes(delta), max_output_size=size)
    except zstandard.ZstdError as exc:
        raise ProtocolError(f"broken delta: {exc}") from exc
    if len(new) != size:
        raise ProtocolError("a delta expands to another size than its write")
    return new
