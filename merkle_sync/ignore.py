"""Which paths stay out of the mirror: ``--exclude`` patterns and ``.merkleignore``, in gitignore
syntax (``pathspec`` implements git's rules, negation and anchoring included).

Both sides apply the same rules: the source does not send an excluded path, and the target
leaves its own excluded entries out of its tree, so they are neither replaced nor deleted
(unless the user asks for ``--delete-excluded``, when the target does not filter at all).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

#: Read from the root of the source tree; it is itself mirrored, as ``.gitignore`` is.
IGNORE_FILE = ".merkleignore"
#: Patterns at most: they travel to the target in the handshake, and each one costs a regex
#: match per scanned entry.
MAX_PATTERNS = 10_000
MAX_PATTERN_BYTES = 4096
#: Wildcards (``*`` runs, ``**`` path components included) in one pattern at most. pathspec
#: matches with Python's backtracking regular expressions, so each ``*`` multiplies the
#: work on a long name: 11 adjacent ones took 11 s on one name, and a client's patterns
#: reach the target. Adjacent ones are one wildcard (git's rule); three took 3 ms on a
#: name of 250 bytes made to be slow, where eight ``**`` components took 21 s on a path of
#: 40 levels.
MAX_WILDCARDS = 3


def _simplified(pattern: str) -> str:
    """Adjacent ``*`` as one (git: "other consecutive asterisks are regular asterisks");
    a ``**`` that is a whole path component keeps its meaning. A backslash escapes the
    next character, so a ``*`` after an escaped backslash is still a wildcard. Refused past
    ``MAX_WILDCARDS`` (the patterns are read once, so this loop is on no hot path)."""
    out: list[str] = []
    count = at = 0
    while at < len(pattern):
        c = pattern[at]
        if c == "\\":
            out.append(pattern[at : at + 2])
            at += 2
            continue
        if c != "*":
            out.append(c)
            at += 1
            continue
        end = at
        while end < len(pattern) and pattern[end] == "*":
            end += 1
        whole = pattern[at - 1 : at] in ("", "/") and pattern[end : end + 1] in ("", "/")
        out.append("**" if end - at == 2 and whole else "*")
        count += 1
        at = end
    if count > MAX_WILDCARDS:
        raise ValueError(f"exclude pattern with more than {MAX_WILDCARDS} wildcards: {pattern!r}")
    return "".join(out)


class Ignore:
    """A predicate over relative paths; directories are tested with a trailing slash."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: tuple[str, ...] = tuple(_simplified(p) for p in patterns if p.strip())
        if len(self.patterns) > MAX_PATTERNS:
            raise ValueError(f"more than {MAX_PATTERNS} exclude patterns")
        for p in self.patterns:
            if len(p.encode("utf-8", "surrogateescape")) > MAX_PATTERN_BYTES:
                raise ValueError(f"exclude pattern longer than {MAX_PATTERN_BYTES} bytes")
        self._spec = None
        if self.patterns:  # imported only then: it is a tenth of the command's start-up
            import pathspec

            self._spec = pathspec.GitIgnoreSpec.from_lines(self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __call__(self, rel: str, is_dir: bool) -> bool:
        return self._spec is not None and self._spec.match_file(rel + "/" if is_dir else rel)


def read_patterns(path: str) -> list[str]:
    """The lines of an exclude file, comments and blank lines dropped (gitignore rules)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


def source_patterns(root: str, excludes: Iterable[str], files: Iterable[str]) -> list[str]:
    """``--exclude`` patterns, then each ``--exclude-from`` file, then ``root/.merkleignore``."""
    patterns = list(excludes)
    for f in files:
        patterns += read_patterns(f)
    own = os.path.join(root, IGNORE_FILE)
    if os.path.isfile(own) and not os.path.islink(own):
        patterns += read_patterns(own)
    return patterns
