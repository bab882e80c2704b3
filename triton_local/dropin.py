"""Add a model folder to a live repository so that Triton never sees it half-copied.

In poll mode Triton loads whatever folder it finds at the next poll. A folder being copied in
place may be seen without its ``model.onnx`` (a failed load) or with a truncated one. Copying
into a scratch folder on the same filesystem and renaming it into the repository makes the folder
appear complete in one step: a rename within a filesystem is atomic.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def install_model(
    source: str | os.PathLike[str], repository: str | os.PathLike[str], name: str | None = None
) -> Path:
    """Copy the model folder ``source`` into ``repository`` as ``name`` (default: its own name).

    Raises ``FileExistsError`` when the repository already has that model: replacing a model is a
    different operation (add a new version folder, or remove the old folder first).
    """
    source_dir = Path(source)
    repository_dir = Path(repository)
    target = repository_dir / (name or source_dir.name)
    if target.exists():
        raise FileExistsError(f"{target} exists; add a new version folder instead")
    # The scratch folder sits next to the repository, not in it, where the poller would see it.
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=repository_dir.parent))
    try:
        staged = scratch / target.name
        shutil.copytree(source_dir, staged)
        staged.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
