"""`Image`: a read-only template that containers are made from."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from ..errors import ImageError
from .config import ImageConfig


@attrs.frozen
class Image:
    """A read-only, layered root filesystem plus the config that says how to run it.

    ``layer_dirs`` lists the applied layer directories from the bottom layer to the top one; a
    container stacks them as overlay lower directories, so nothing is copied per container.
    """

    layer_dirs: tuple[Path, ...]
    config: ImageConfig = ImageConfig()
    id: str = ""
    name: str = ""

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str], *, config: ImageConfig | None = None) -> Image:
        """Use an existing directory tree as a one-layer image (it is never written to)."""
        root = Path(path).absolute()
        if not root.is_dir():
            raise ImageError(
                f"image directory {str(root)!r} does not exist or is not a directory: "
                "pass the path of an unpacked root filesystem (a folder with bin/, etc/, ...)"
            )
        if ":" in str(root) or "," in str(root):
            # overlayfs splits lowerdir= on ':' and the option string on ','
            raise ImageError(
                f"image directory {str(root)!r} contains ':' or ',', which overlayfs cannot take "
                "in a layer path: move or rename the directory"
            )
        return cls(layer_dirs=(root,), config=config or ImageConfig(), name=str(root))
