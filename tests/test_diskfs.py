"""The replicators on a real disk: an exact mirror, and symbolic links never lead outside."""

from __future__ import annotations

import os

from merkle_sync import ReplicatorSource, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.testing import MeteredRpc, snapshot


def test_disk_mirror_and_links_in_the_target_are_replaced_not_followed(tmp_path):
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    for d in (src / "link_dir", dst, outside):
        d.mkdir(parents=True)
    (src / "link_dir" / "x").write_bytes(b"inside")
    (src / "link_file").write_bytes(b"a regular file")
    (src / "plain").write_text("plain")
    (outside / "x").write_bytes(b"must stay")
    (outside / "secret").write_bytes(b"must stay too")
    os.symlink(outside, dst / "link_dir")
    os.symlink(outside / "secret", dst / "link_file")
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst))
    ReplicatorSource(fs, str(src), MeteredRpc(target.handle_request))
    assert snapshot(fs, str(src)) == snapshot(fs, str(dst))
    assert not (dst / "link_dir").is_symlink() and not (dst / "link_file").is_symlink()
    assert (outside / "x").read_bytes() == b"must stay"
    assert (outside / "secret").read_bytes() == b"must stay too"
    # no temporary files; the target's private state sits under the reserved name
    assert sorted(os.listdir(dst)) == [".merkle_sync", "link_dir", "link_file", "plain"]
    assert os.listdir(dst / ".merkle_sync" / "tmp") == []


def test_links_in_the_source_are_not_followed(tmp_path):
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    for d in (src, dst, outside):
        d.mkdir()
    (outside / "secret").write_bytes(b"private")
    os.symlink(outside, src / "escape")
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst))
    ReplicatorSource(fs, str(src), MeteredRpc(target.handle_request))
    # The link is replicated as a link with the same text, never followed on either side.
    assert (dst / "escape").is_symlink()
    assert os.readlink(dst / "escape") == str(outside)
    assert sorted(os.listdir(outside)) == ["secret"]
