"""Checks a step makes before its expensive work, so a cause knowable at the start fails at the start."""
from __future__ import annotations

import os
from pathlib import Path

from .params_file import path_problem


def check_writable(folders: list[Path], out: Path | None = None) -> None:
    """Each folder exists and is writable, or can be made in its nearest existing parent; else an OSError
    naming it. `os.access` asks the kernel for this process's rights (root passes unless its override
    capabilities are dropped, exactly as a write would)."""
    for folder in ([out] if out is not None else []) + list(map(Path, folders)):
        try:
            folder.exists()
        except OSError as err:  # a name, or the whole path, longer than the file system allows (ENAMETOOLONG)
            raise OSError(path_problem(folder, "an output folder", folder=True) or str(err)) from None
    if out is not None and out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: a file, not a folder; pass a folder (it is made if missing)")
    for folder in map(Path, folders):
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing}: a file where the step writes into a folder ({folder})")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"{existing}: no write permission; the step writes {folder}. Make it writable "
                                  "or pass another --out")
