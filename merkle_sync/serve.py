"""The target's end of a byte stream: ``merkle-sync serve --stdio DIR`` (what ssh starts).

It reads records from stdin and writes records to stdout; logs go to stderr, so nothing but
records ever reaches stdout. The client's hello carries the target's options; they are
validated here, where they are untrusted, like every frame after them.
"""

from __future__ import annotations

import atexit
import os
from typing import IO, Any

from merkle_sync.checks import ProtocolError
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.ignore import Ignore
from merkle_sync.readonly import ReadOnlyFileSystem
from merkle_sync.target import ReplicatorTarget
from merkle_sync.transport import FRAME, HELLO, Link, check_hello, hello

_BOOLS = ("dry_run", "durable", "verify", "index", "force")


def target_options(raw: dict[str, Any]) -> dict[str, Any]:
    """The hello's options, checked: known keys, the right types, bounded sizes."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _BOOLS:
            if not isinstance(value, bool):
                raise ProtocolError(f"option {key!r} must be a boolean")
        elif key == "max_delete":
            if value is not None and (type(value) is not int or value < 0):  # not a bool
                raise ProtocolError("option 'max_delete' must be a count or nil")
        elif key == "exclude":
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ProtocolError("option 'exclude' must be a list of patterns")
        else:
            raise ProtocolError(f"unknown option {key!r}")
        out[key] = value
    return out


def open_target(path: str, options: dict[str, Any]) -> ReplicatorTarget:
    """The target for ``path`` with the client's options. A dry run opens it read-only and
    with no index (nothing is created, not even the directory or its state).

    The directory the user named is resolved once, here: a link there (``~/backup`` to a
    mounted disk) is where they want the mirror. Below it, no link is ever followed."""
    path = os.path.realpath(path)
    try:
        ignore = Ignore(options.get("exclude", []))
    except ValueError as exc:
        raise ProtocolError(str(exc)) from exc
    fs: Any = DiskFileSystem()
    index = options.get("index", True)
    if options.get("dry_run"):
        if not os.path.lexists(path):
            import tempfile  # only a dry run into a missing directory needs it

            path = tempfile.mkdtemp(prefix="merkle-sync-dry-")  # stands for "empty"
            atexit.register(os.rmdir, path)
        fs, index = ReadOnlyFileSystem(fs), False
    return ReplicatorTarget(
        fs,
        path,
        index=index,
        verify=options.get("verify", False),
        durable=options.get("durable", True),
        ignore=ignore or None,
        max_delete=options.get("max_delete"),
        guard_unmarked=not options.get("force", False),
    )


def serve(path: str, reader: IO[bytes], writer: IO[bytes]) -> int:
    """Answer one client until it closes the stream; the exit status of the server."""
    link = Link(reader, writer, "the client")
    record = link.receive()
    if record is None:
        return 0
    kind, payload = record
    try:
        if kind != HELLO:
            raise ProtocolError("the client did not start with a hello")
        options = target_options(check_hello(payload, "the client").get("options", {}))
        target = open_target(path, options)
    except Exception as exc:  # the client reports it; only the exit status is ours
        link.send_error(exc)
        return 12 if isinstance(exc, ProtocolError) else 11
    link.send(HELLO, hello())
    try:
        while True:
            record = link.receive()
            if record is None:
                return 0
            kind, payload = record
            if kind != FRAME:
                link.send_error(ProtocolError(f"expected a frame, got a {kind!r} record"))
                return 12
            try:
                reply = target.handle_request(payload)
            except Exception as exc:  # reported to the client, which decides; we go on
                link.send_error(exc)
                continue
            link.send(FRAME, reply)
    finally:  # Ctrl-C or a broken link too: a file staged across frames is not left behind
        target.close()
