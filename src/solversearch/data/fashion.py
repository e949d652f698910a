"""Fashion-MNIST (60k train + 10k test, 28x28 grey, 10 classes) from the Debian package ``dataset-fashion-mnist``.

It is the best real image data these machines can install (no hub downloads), so the bundled image models and
the offline Fréchet distance are built on it.  The gzipped idx files are parsed with numpy: no new dependency.
"""

from __future__ import annotations

import gzip
import os
import threading
from pathlib import Path

import numpy as np
import torch

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "SOLVERSEARCH_FASHION_DIR"  # overrides DEFAULT_DIR (a copy of the four .gz files elsewhere)
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_CACHE: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
_LOCK = threading.Lock()


def fashion_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file: magic (0, 0, dtype 0x08 = uint8, ndim), big-endian int32 sizes, then the raw bytes."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != ndim:
        raise ValueError(f"{path}: not a uint8 idx file with {ndim} dimensions")
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {body.size} bytes of data for dimensions {tuple(dims)} (truncated file?)")
    return body.reshape(tuple(int(d) for d in dims))


def load_fashion(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)``: float32 (N, 1, 28, 28) in [-1, 1] (the range the models are trained in) and int64 (N,).

    Cached per process and folder; callers get the cached tensors, so they must not modify them in place.
    """
    if split not in _FILES:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    folder = fashion_dir()
    key = (str(folder), split)
    with _LOCK:
        if key not in _CACHE:
            paths = [folder / name for name in _FILES[split]]
            missing = [p.name for p in paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}); install it with "
                    f"`sudo apt-get install dataset-fashion-mnist`, or point {ENV_VAR} at a folder holding "
                    "the four idx .gz files")
            images, labels = _read_idx(paths[0], 3), _read_idx(paths[1], 1)
            if len(images) != len(labels):
                raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels in split {split!r}")
            x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1).div_(127.5).sub_(1.0)
            _CACHE[key] = (x, torch.from_numpy(labels.astype(np.int64)))
        return _CACHE[key]
