"""Search checkpoints: everything needed to continue a search exactly where it stopped.

Saved atomically (temp file + rename), so a kill at any moment leaves the previous checkpoint intact, and loaded
with ``torch.load(weights_only=True)``: only tensors and plain Python values, nothing is unpickled.  A resumed
run on CPU with the same process count ends with the bit-identical solver of an uninterrupted run.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import torch

from .. import atomic

CHECKPOINT_VERSION = 1


class SearchInterrupted(RuntimeError):
    """SIGTERM/SIGINT arrived; the state was checkpointed and ``--resume`` continues from it."""


def save(path: str | Path, state: dict, config: dict) -> None:
    payload = dict(state, version=CHECKPOINT_VERSION, config=json.dumps(config, sort_keys=True))
    with atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path: str | Path, config: dict) -> dict:
    """The saved state; refuses a checkpoint of a different search (another config) with a clear error."""
    path = Path(path)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # a damaged file: never half-trust it
        raise ValueError(f"{path}: not a readable search checkpoint ({type(e).__name__}: {e})") from None
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: field 'version': unsupported checkpoint version {state.get('version')!r}")
    saved = json.loads(state["config"])
    if saved != config:
        diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        raise ValueError(f"{path}: checkpoint of a different search (differs in: {', '.join(diff)})")
    return state


class StopFlag:
    """Catches SIGTERM/SIGINT during a search so it can checkpoint and stop at the next step boundary."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    def __bool__(self) -> bool:
        return self.signal is not None
