"""Writing files: never half-written, never over something the user did not ask to replace."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import OutputError


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write a file so that readers see the old or the new content, never a half-written one."""
    path = Path(path)
    data = data.encode() if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # a full disk, a directory where the file should go...
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def check_output_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail now, not after minutes of work, if ``path`` cannot be written as a file: its
    directory must exist and be writable, and the path must not be a directory."""
    if str(path).endswith(os.sep) or Path(path).is_dir():
        raise OutputError(f"{what} {path}: is a directory; give a file name")
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: directory {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{what} {path}: file is not writable")
    return path
