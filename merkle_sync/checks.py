"""The checks every value from the wire passes, and the one error they raise (pure).

A peer-supplied length is checked before anything is allocated for it (rsync's 2024 CVEs all
came from a length trusted beyond what was allocated); a path can never leave the tree.
"""

from __future__ import annotations

FULL_HASH = 32
MIN_HASH = 8
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_ITEMS = 4_000_000
#: The one name at the root of either tree that is never mirrored: the target keeps its
#: staging and kept files there (as ``.git`` or Syncthing's ``.stfolder``).
RESERVED = ".merkle_sync"
_INT64 = 1 << 63


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
