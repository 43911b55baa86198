"""Outputs that appear only once complete: write under a hidden temporary name beside the target, then rename.

An interrupted run (an exception, Ctrl-C, a killed process) therefore never leaves a file or folder at the target
path that looks finished, and a reader never sees half of one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    """The process's file-creation mask. Reading it means setting it, so it is read once, at import, before any
    thread of the toolkit could create a file while it is briefly 0."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path` (same suffix) to write; renames it to `path` when the block succeeds
    and deletes it when the block raises. Missing parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        staging.chmod(0o666 & ~_UMASK)  # mkstemp makes the file private; a finished output gets the usual mode
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


@contextmanager
def staged_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary folder beside `path` to fill; moves it to `path` (which must be missing or empty) when the
    block succeeds, and deletes it when the block raises. Missing parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield staging
        staging.chmod(0o777 & ~_UMASK)  # mkdtemp makes the folder private; a finished output gets the usual mode
        if path.exists():
            path.rmdir()
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_json(path: str | os.PathLike, document: Any, *, indent: int | None = 2) -> Path:
    """Writes `document` as strict JSON to `path`, atomically. JSON has no infinities or NaN, so such floats (a PSNR
    of identical images is infinite) are written as `null`: a reader that does arithmetic on the numbers never meets
    a string among them."""
    path = Path(path)
    with staged_file(path) as staging:
        staging.write_text(json.dumps(_strict(document), indent=indent, allow_nan=False))
    return path


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item) for item in value]
    return value
