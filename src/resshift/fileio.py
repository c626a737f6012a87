"""Atomic file writes: every output of resshift (images, checkpoints, logs, model folders) goes here."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO


WRITE_BUFFER = 1 << 20


class _Output(io.FileIO):
    """The temporary file as `write` sees it: a plain binary file that hides its descriptor, so that no
    encoder (Pillow's JPEG and TIFF writers would) writes around `write` here. Every byte of every output
    therefore passes `_Output.write`, where a full disk or an I/O error shows up (and where tests inject them)."""

    def fileno(self) -> int:
        raise io.UnsupportedOperation("an atomic output has no file descriptor to share")

    def sync(self) -> None:
        """fsync: the bytes are on the disk."""
        os.fsync(super().fileno())


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write through `write(fp)` to a temporary file beside `path`, fsync, then rename over `path`.

    No reader ever sees a partial file, and on any failure (disk full, an encoder raising, Ctrl-C)
    the temporary file is removed and an existing `path` is left as it was. Only a killed process
    leaves its temporary file behind: `remove_stale_temporaries` clears those of a path.
    """
    path = Path(path)
    tmp = temporary_name(path, secrets.token_hex(4))
    # "x": a new file, 0o666 filtered by the umask as for any file (mkstemp would make it private to the user).
    raw = _Output(tmp, "xb")
    try:
        with io.BufferedWriter(raw, WRITE_BUFFER) as fp:
            write(fp)
            fp.flush()
            raw.sync()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def temporary_name(path: Path, token: str) -> Path:
    """Where `atomic_write` writes `path` first: a hidden file beside it, `.NAME.TOKEN.tmp`."""
    return path.with_name(f".{path.name}.{token}.tmp")


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Remove the temporary files of `path` that killed writers left (`.NAME.<8 hex digits>.tmp`); returns
    how many. Call it only where no other process is writing `path` at the same time."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"[0-9a-f]{8}\.tmp")     # temporary_name's, any token
    removed = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda fp: fp.write(data))


def atomic_write_json(path: str | os.PathLike, data: object) -> None:
    """`data` as indented JSON with a final newline, written atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def atomic_write_csv(path: str | os.PathLike, header: Sequence[object], rows: Iterable[Sequence[object]]) -> None:
    """A header row and the rows as CSV ("\n" line ends), written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; not every platform or file system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
