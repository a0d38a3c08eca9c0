"""A tree with everything `docker cp` has rules for, and a listing to compare copies of it by.
No pytest in here."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

# Fixed times (whole seconds, as Docker's tars keep them), so a copy that drops them shows.
OLD = 1_500_000_000


def make_tree(top: Path, *, owners: bool, escaping: bool = False) -> Path:
    """Files, an empty directory, a 0700 one, a setuid file, symlinks (relative, absolute,
    dangling), a hard link pair; with ``owners`` (root only) other owners; with ``escaping`` a
    relative symlink that climbs out of the tree (Docker refuses to copy it to the host)."""
    top.mkdir()
    (top / "empty").mkdir()
    (top / "private").mkdir(mode=0o700)
    (top / "private" / "secret").write_bytes(b"s3cret\n")
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / "sub" / "deeper" / "data.bin").write_bytes(bytes(range(256)) * 300)
    (top / "hello.txt").write_text("hello\n")
    (top / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chmod(top / "setuid", 0o4755)
    (top / "readonly").write_bytes(b"ro\n")
    os.chmod(top / "readonly", 0o444)
    os.link(top / "hello.txt", top / "sub" / "hardlink")
    os.symlink("../hello.txt", top / "sub" / "relative")
    os.symlink("/etc/hostname", top / "absolute")
    os.symlink("nowhere/at/all", top / "dangling")
    os.symlink("../up-one-level", top / "sub" / "up-but-inside")
    if escaping:
        os.symlink("../../../../../../etc/passwd", top / "sub" / "out-of-tree")
    if owners:
        os.chown(top / "hello.txt", 1000, 1000)
        os.chown(top / "sub", 123, 456)
        os.chown(top / "absolute", 7, 8, follow_symlinks=False)
        os.chown(top / "private", 1000, 0)
    for path in sorted(top.rglob("*"), key=lambda p: -len(p.parts)):
        os.utime(path, (OLD, OLD + len(path.name)), follow_symlinks=False)
    os.utime(top, (OLD, OLD))
    return top


def listing(top: Path, *, owners: bool = True, top_mtime: bool = True) -> list[tuple]:
    """(path, type, mode, uid:gid, size, link target or content hash, mtime, first path of the
    same inode) for every member, sorted: what `docker cp` keeps (or is meant to)."""
    rows = []
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in ["", *sorted(dirnames), *sorted(filenames)]:
            if name == "" and dirpath != str(top):
                continue
            path = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(path, top)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
            else:
                what = ""
            first = inodes.setdefault((st.st_dev, st.st_ino), rel) if stat.S_ISREG(kind) else rel
            rows.append(
                (
                    rel,
                    oct(kind),
                    oct(stat.S_IMODE(st.st_mode)) if not stat.S_ISLNK(st.st_mode) else "",
                    f"{st.st_uid}:{st.st_gid}" if owners else "",
                    st.st_size if stat.S_ISREG(st.st_mode) else 0,
                    what,
                    int(st.st_mtime) if (top_mtime or rel != ".") else 0,
                    first,
                )
            )
    return sorted(rows)


def staging_left(top: Path) -> list[str]:
    """Staging directories of a copy left under ``top`` (there should be none)."""
    return [str(p) for p in top.rglob(".sandkit-cp-*")]
