"""The checks every value from the wire passes, and the one error they raise (pure).

A peer-supplied length is checked before anything is allocated for it (rsync's 2024 CVEs all
came from a length trusted beyond what was allocated); a path can never leave the tree.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import TypeVar

from merkle_sync.chunking import CHUNK_MAX, SUB_MIN

FULL_HASH = 32
MIN_HASH = 8
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_ITEMS = 4_000_000
#: The one name at the root of either tree that is never mirrored: the target keeps its
#: staging and kept files there (as ``.git`` or Syncthing's ``.stfolder``).
RESERVED = ".merkle_sync"
_INT64 = 1 << 63

#: Files up to what a disk allows (``off_t``): nothing assumes a file fits in memory.
MAX_FILE_SIZE = (1 << 63) - 1
#: A decoded frame never exceeds this; compressed frames are inflated against it.
MAX_FRAME = 256 << 20
#: Spans of old content a target may be asked to cut into sub-chunks for one request.
MAX_BASIS = 4096
MAX_SPAN = 4 * CHUNK_MAX
#: Bytes of a sub-chunk's hash in a refinement probe. It is looked up only among the
#: sub-chunks of its own basis span (a few leaves: about 100 of them), so a false match has
#: odds of about 100 / 2**24 per probe: 1 in 50 for a sync that probes 3,300 of them (issue
#: 11's pip upgrade). The target's check of each refined leaf where it found something
#: (``PROBE_CHECK`` bytes, a hash of the full hashes it found) catches it before the apply:
#: the source then sends that leaf whole, and one false match in 256 is left to the file
#: hash and the repair walk with full hashes that follows, whose probe has full hashes too
#: (``probe_hash_len``): one sync in about 13,000 of that size, as 4 bytes unchecked were.
#: Measured on the pip upgrade: 3,289 probes, 3.3 kB less up, 0.2 kB more down.
SUB_HASH = 3
PROBE_CHECK = 1


def digest_width(hash_len: int, children: int) -> int:
    """Bytes of each entry digest in ``Walk.sums`` for a directory of ``children``: each of
    them is compared with each of the target's (about as many), so the width grows with
    the directory to keep a false match near one in a million per directory; with full
    hashes (the retry after any failure) it is 32, so a false match never repeats."""
    if hash_len >= FULL_HASH:
        return FULL_HASH
    bits = 2 * max(children, 1).bit_length() + 20
    return min(hash_len, max(3, -(-bits // 8)))


def split_fixed(packed: bytes, width: int, start: int = 0) -> list[bytes]:
    """The items of a string of fixed-width items (hashes, digests) from ``start``; the
    caller has checked that the length fits."""
    return [packed[i : i + width] for i in range(start, len(packed), width)]


def probe_hash_len(hash_len: int) -> int:
    """The probe's hash length in a walk of ``hash_len``: the retry with full hashes after
    a false match must not meet the same false match again."""
    return SUB_HASH if hash_len < FULL_HASH else FULL_HASH


#: Sub-chunks of one leaf at most (each is at least ``SUB_MIN`` bytes).
MAX_SUBS = CHUNK_MAX // SUB_MIN + 1
#: Budgets of one request, checked by the target before it reads or copies anything, and
#: respected by the source when it cuts an apply into frames:
#: old bytes a request's basis spans may make the target read (whole leaves around each span),
MAX_BASIS_READ = 32 << 20
#: and bytes of reused pieces one apply frame may name (copied in the kernel on a disk).
MAX_REUSE = 1 << 30
#: Hashes the target confirmed holding during one sync's walk, in order: an apply may name
#: one of them by its position (a negative piece) instead of repeating its hash.
MAX_CONFIRMED = 1 << 20
#: Paths a target reports it could not read (and so left as they are), per reply at most.
MAX_UNREAD = 64
KINDS = (0, 1, 2, 3)  # directory, bytes file, str file, symbolic link
FILE_KINDS = (1, 2, 3)
LINK_KIND = 3
#: A link's text never exceeds this: Linux's PATH_MAX counts the closing NUL, so a link of
#: 4,096 bytes passed every check and then failed at its commit.
MAX_LINK = 4095
#: Largest file (old or new version) sent as a delta against the old one (see
#: ``merkle_sync.delta``): both versions are held whole while it is made and applied.
DELTA_MAX = 1 << 20


class ProtocolError(ValueError):
    """The one error for anything malformed, oversized, inconsistent or unsafe from a peer."""


class Refused(RuntimeError):
    """A valid plan that breaks a safety limit the user set (``--max-delete``, an empty source
    that would empty the target): stopped before anything changed. Not a peer's fault, so
    never retried."""


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ProtocolError(what)


def check_name(name: object) -> str:
    """One path component: no separators, no NUL, not empty, not ``.`` or ``..``."""
    _require(isinstance(name, str), f"name must be str, got {type(name).__name__}")
    assert isinstance(name, str)
    _require(name not in ("", ".", ".."), f"forbidden name {name!r}")
    _require("/" not in name and "\0" not in name, f"name contains '/' or NUL: {name!r}")
    _require(len(_name_bytes(name)) <= MAX_NAME_BYTES, "name too long")
    return name


def _name_bytes(name: str) -> bytes:
    """A name's bytes on disk: names that are not UTF-8 come (and go) as surrogate escapes."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise ProtocolError(f"name {name!r} is no sequence of bytes") from exc


def check_path(path: object, root_ok: bool = False) -> str:
    """A canonical relative path that cannot leave the target directory."""
    _require(isinstance(path, str), f"path must be str, got {type(path).__name__}")
    assert isinstance(path, str)
    _require(len(path) <= MAX_PATH_BYTES, "path too long")
    if path == "":
        _require(root_ok, "empty path")
        return path
    # Whole-string tests first (each one pass in C): empty, "." and ".." components, NUL.
    wrapped = f"/{path}/"
    _require(
        "//" not in wrapped and "/./" not in wrapped and "/../" not in wrapped,
        f"forbidden component in {path!r}",
    )
    _require("\0" not in path, f"path contains NUL: {path!r}")
    if not path.isascii():  # lone surrogates: only the escapes of undecodable bytes
        _name_bytes(path)
    if len(path) * 4 > MAX_NAME_BYTES:  # only then can one component be too long
        for part in path.split("/"):
            _require(len(_name_bytes(part)) <= MAX_NAME_BYTES, "name too long")
    _require(path.split("/", 1)[0] != RESERVED, f"{RESERVED!r} at the root is reserved")
    return path


def check_hash(h: object, length: int) -> bytes:
    _require(isinstance(h, bytes) and len(h) == length, f"hash must be {length} bytes")
    assert isinstance(h, bytes)
    return h


def check_hash_len(n: object) -> int:
    _require(type(n) is int and MIN_HASH <= n <= FULL_HASH, f"bad hash length {n!r}")
    assert isinstance(n, int)
    return n


def check_items(items: object, what: str, cap: int = MAX_ITEMS) -> tuple:
    _require(isinstance(items, tuple), f"{what} must be a tuple")
    assert isinstance(items, tuple)
    _require(len(items) <= cap, f"too many {what}")
    return items


def check_meta(meta: object) -> None:
    """Permission bits and a modification time in ns, or ``None`` (not reported)."""
    if meta is None:
        return
    _require(isinstance(meta, tuple) and len(meta) == 2, f"bad metadata {meta!r}")
    assert isinstance(meta, tuple)
    check_int(meta[0], 0, 0o7777, "mode")
    check_int(meta[1], -_INT64, _INT64 - 1, "mtime")


def check_int(n: object, low: int, high: int, what: str) -> int:
    _require(type(n) is int and low <= n <= high, f"{what} out of range: {n!r}")
    assert isinstance(n, int)
    return n


_T = TypeVar("_T")
#: Per record class: its field names in order, and each field's default (``None`` if none).
_SHAPES: dict[type, tuple[tuple[str, ...], tuple[tuple[str, object], ...]]] = {}


def trusted(cls: type[_T], *args: object, **kwargs: object) -> _T:
    """A record this side built from its own verified state, constructed without the checks.

    Validation belongs where a message is untrusted: the receiving side decodes every frame
    through the validating constructors. Checking what a side built itself only costs time
    (an initial sync of 100,000 files built every recipe twice over).
    """
    shape = _SHAPES.get(cls)
    if shape is None:
        found = fields(cls)  # type: ignore[arg-type]
        shape = _SHAPES[cls] = (
            tuple(f.name for f in found),
            tuple((f.name, None if f.default is MISSING else f.default) for f in found),
        )
    obj = object.__new__(cls)
    values = dict(zip(shape[0], args, strict=False), **kwargs)
    for name, default in shape[1]:
        object.__setattr__(obj, name, values.get(name, default))
    return obj


def check_run(p: object) -> int:
    """A count of literals taken in order (positive), or ``-(i + 1)`` for the ``i``-th hash
    the target confirmed during the walk (negative)."""
    _require(type(p) is int and p != 0 and -MAX_CONFIRMED <= p <= MAX_ITEMS, f"bad piece {p!r}")
    assert isinstance(p, int)
    return p


def literal_runs(pieces: tuple) -> int:
    """How many literals a recipe takes, refined leaves included."""
    total = 0
    for p in pieces:
        if isinstance(p, int):
            total += max(p, 0)
        elif isinstance(p, tuple) and p[:1] == (0,):
            total += p[2]  # type: ignore[operator]
        elif isinstance(p, tuple):
            total += sum(q for q in p if isinstance(q, int) and q > 0)
    return total
