"""Checks of output paths before any work starts: the kind of path, a writable folder, and room on the disk.

Importing this module is cheap (no torch). Missing parent folders are not created here (a refused run leaves nothing
behind): the writers of [`zeroshot.atomic`] create them when the output is written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import ZeroshotError

#: Space left free on the disk beyond an output's expected size, for the staging copy and everything else.
SPARE_BYTES = 64 * 2**20


def nearest_existing_folder(path: str | os.PathLike) -> Path:
    """The closest ancestor of `path` that exists (the folder its missing parents would be created in).

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: that ancestor is a file, so no folder can be created under it.
    """
    folder = Path(path).absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ZeroshotError(f"Cannot write {str(path)!r}: {str(folder)!r} is a file, not a folder.")
    return folder


def check_output(
    path: str | os.PathLike, *, what: str = "output", folder: bool = False, expected_bytes: int = 0
) -> Path:
    """Checks that an output can be written at `path` (a file, or a folder with `folder=True`), before the work.

    Args:
        path (`str` or `os.PathLike`): where the output goes; missing parent folders are fine (they are created
            when it is written).
        what (`str`, *optional*, defaults to `"output"`): what the output is (`"--json"`, ...), for messages.
        folder (`bool`, *optional*, defaults to `False`): the output is a folder, which must be missing or empty.
        expected_bytes (`int`, *optional*, defaults to 0): about how large the output will be; the disk must have
            that much free, and `SPARE_BYTES` more.

    Returns:
        `Path`: `path`.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: a folder where a file is meant (or a file where a folder is meant), a
        non-empty output folder, a parent that is a file, a folder that cannot be written, or a full disk.
    """
    text = os.fspath(path)
    path = Path(path)
    if not folder and (path.is_dir() or text.endswith(("/", os.sep))):
        raise ZeroshotError(f"{what} {text!r} names a folder, but a file is written there; give a file path.")
    if folder and path.exists() and (not path.is_dir() or any(path.iterdir())):
        kind = "a file" if not path.is_dir() else "a folder that is not empty"
        raise ZeroshotError(f"{what} {text!r} is {kind}; give a missing or empty folder, or remove it.")
    parent = nearest_existing_folder(path)
    try:  # os.access says yes to root even on a read-only disk: only creating a file tells
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        message = f"Cannot write {what} {text!r}: folder {str(parent)!r} is not writable ({error})."
        raise ZeroshotError(message) from None
    free = shutil.disk_usage(parent).free
    if free < expected_bytes + SPARE_BYTES:
        raise ZeroshotError(
            f"Not enough free disk space for {what} {text!r}: {free / 2**20:.0f} MiB free in {str(parent)!r}, about "
            f"{(expected_bytes + SPARE_BYTES) / 2**20:.0f} MiB needed."
        )
    return path
