"""Writing the files that a reader or a restarted process may open at any moment.

A rename is atomic but not durable: after a node crash the new name can point at a file whose
data never reached the disk (ext4 and xfs order metadata and data separately), or the rename
itself can be lost. So the data is fsynced before the rename and the directory after it, as
databases and etcd do.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (a rename into it, a new file) durable. Best effort: some
    filesystems (and Windows) cannot open a directory for fsync."""
    with contextlib.suppress(OSError):
        fsync_file(path)


def fsync_tree(root: str | Path) -> None:
    """fsync every file and directory under root (a checkpoint before it is marked complete)."""
    for current, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # a file rotated away meanwhile
                fsync_file(os.path.join(current, name))
        fsync_dir(current)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write through a temporary file, fsync, rename, fsync the directory: a reader never sees
    half a file, and after a crash the file is the old one or the new one, whole."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    fsync_dir(target.parent)
