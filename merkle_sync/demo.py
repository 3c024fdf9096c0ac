"""A real sync end to end, in a few seconds: ``python -m merkle_sync.demo [DIR]``.

It writes an example tree on disk (a small source package and a 4 MiB binary), mirrors it
with the ``merkle-sync`` command, changes it the way people do (an edit in the middle of the
large file, a new file, a ``chmod +x``, a deletion, a rename), and syncs again, printing the
command and what each run cost. Everything is left in DIR (a temporary directory by default)
to look at.
"""

from __future__ import annotations

import os
import random
import shlex
import sys
import tempfile

from merkle_sync.cli import main as merkle_sync


def _write_tree(src: str) -> None:
    rng = random.Random(7)
    words = ["def", "return", "self", "value", "import", "class", "for", "in", "if", "None"]
    for d in range(20):
        os.makedirs(os.path.join(src, f"pkg{d}", "sub"), exist_ok=True)
        for f in range(10):
            text = " ".join(rng.choice(words) for _ in range(300)) + "\n"
            with open(os.path.join(src, f"pkg{d}", "sub", f"m{f}.py"), "w") as out:
                out.write(text)
    with open(os.path.join(src, "blob.bin"), "wb") as out:
        out.write(rng.randbytes(4 << 20))
    os.symlink("pkg0/sub/m0.py", os.path.join(src, "link.py"))


def _run(*args: str) -> None:
    print(f"$ merkle-sync {shlex.join(args)}", flush=True)
    code = merkle_sync(list(args))
    if code:
        sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    base = argv[0] if argv else tempfile.mkdtemp(prefix="merkle-sync-demo-")
    src, dst = os.path.join(base, "src"), os.path.join(base, "mirror")
    _write_tree(src)
    print(f"# an example tree: 200 small files, a 4 MiB binary and a link, in {src}")
    _run(src, dst)
    print("# again, nothing changed: one round trip")
    _run(src, dst)
    with open(os.path.join(src, "blob.bin"), "r+b") as f:
        f.seek(2_000_000)
        f.write(b"\xff")
    with open(os.path.join(src, "pkg3", "NEW.txt"), "w") as f:
        f.write("a new file\n")
    os.chmod(os.path.join(src, "pkg1", "sub", "m1.py"), 0o755)
    os.remove(os.path.join(src, "pkg2", "sub", "m2.py"))
    os.rename(os.path.join(src, "pkg5"), os.path.join(src, "renamed5"))
    print("# 1 byte edited in the 4 MiB file, a new file, a chmod +x, a deletion and a")
    print("# directory renamed: the rename costs hashes, the edit one chunk")
    _run("--stats", src, dst)
    print(f"# the mirror is in {dst}")


if __name__ == "__main__":
    main()
