"""File I/O that every part of tinyminds shares: atomic writes, hashes, strict JSON, folder locks,
and the message of a full disk.

- `write_text_atomic` / `write_json_atomic`: write to a hidden temporary file beside the target,
  flush it to disk (``fsync``), then rename it into place, so that a reader (or a process killed
  mid-write) sees the old file or the new one, never half of one.
- `to_json`: JSON with no ``NaN`` or ``Infinity`` (which are not JSON): non-finite floats become
  ``null``, so every file tinyminds writes loads with any JSON reader.
- `sha256_file`: the hex SHA-256 of a file's bytes.
- `folder_lock`: an exclusive ``fcntl`` lock on ``FOLDER/.lock`` held for a command's lifetime. The
  file records the holder (pid, command); a second writer is refused with a message naming it. The
  kernel drops the lock when its process dies, however it dies, so a lock left by a killed process
  is simply taken over by the next command.
- `disk_full_message`: one line naming the disk, the space free and the space needed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tinyminds.errors import UserError

LOCK_FILE = ".lock"


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def to_json(data: Any, indent: int | None = 2) -> str:
    """``data`` as strict JSON text (non-finite floats written as null; paths as strings)."""
    return json.dumps(_finite(data), indent=indent, allow_nan=False, default=str)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically: a temporary file beside it, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """`write_text_atomic` of `to_json` ``data`` (with a final newline)."""
    write_text_atomic(path, to_json(data) + "\n")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the bytes of ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_disk_full(error: BaseException) -> bool:
    """True for an error that says the disk (or the quota) is full: an ``OSError`` with ENOSPC or
    EDQUOT, or torch's ``RuntimeError`` from a write that hit it (torch reports the C++ failure)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "no space left" in text
        or "file write failed" in text
        or "disk quota" in text
        or "unexpected pos" in text
    )


def disk_full_message(folder: Path, needed_bytes: int | None = None) -> str:
    """``the disk of FOLDER (mount M) is full: X MB free[, about Y MB needed]``."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    mount = existing.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    free = shutil.disk_usage(existing).free
    need = f", about {needed_bytes / 1e6:,.1f} MB needed" if needed_bytes else ""
    return f"the disk of {folder} (mount {mount}) is full: {free / 1e6:,.1f} MB free{need}"


def check_not_a_file(path: Path, what: str) -> None:
    """Refuse ``path`` when it exists and is not a folder (e.g. ``out=`` naming a file)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder; choose a folder path")


@contextmanager
def folder_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold ``folder/.lock`` (creating ``folder``) while the block runs; refuse a second holder.

    ``command`` names what holds it in the message another command gets (e.g. ``tinyminds train``).
    """
    check_not_a_file(folder, "the folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "process"
            raise UserError(
                f"{folder} is in use by another {holder}; wait for it to finish, stop it, or "
                "choose another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        argv = " ".join(sys.argv[1:4])
        handle.write(f"{command} (pid {os.getpid()}{', ' + argv if argv else ''})\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
