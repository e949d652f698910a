"""On-disk cache of reference trajectories: generated once, reused by every later search (any NFE, reruns).

Layout of one cache entry ``DIR/<key>/``::

    manifest.json          what was computed (model fingerprint, schedule, reference, guidance, seed, count,
                           dtype, stride) and the sha256 of every shard
    shard-00000.safetensors  noise, labels, times, states for samples [lo, hi); its metadata records the
                           seconds the shard took to compute, so a later run can report what the references
                           cost even when it only loaded them

The key is a hash of the manifest's description, so a different model, schedule, reference, guidance, seed or
sample count never collides.  A shard whose checksum does not match (truncated, altered) or a missing manifest is
detected and regenerated, never used.  Shards are written atomically; with several ranks each rank writes the
shards of its own samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .. import atomic
from ..conventions import schedule_config
from . import distributed as dd
from .reference import Reference

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def model_fingerprint(entry) -> str:
    """sha256 over the network's parameters and buffers (or its name when it has none)."""
    h = hashlib.sha256(entry.name.encode())
    net = entry.net
    if isinstance(net, torch.nn.Module):
        for name, t in sorted(list(net.state_dict().items())):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    else:
        h.update(entry.extra.get("fingerprint", "").encode())
    return h.hexdigest()[:32]


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ReferenceCache:
    def __init__(self, root: str | Path, shard_size: int = 1024):
        self.root = Path(root)
        self.shard_size = shard_size

    def describe(self, entry, spec: str, guidance: float, seed: int, n: int, dtype, stride: int) -> dict:
        return {"version": CACHE_VERSION, "model": entry.name, "fingerprint": model_fingerprint(entry),
                "schedule": schedule_config(entry.schedule), "prediction": entry.prediction, "reference": spec,
                "guidance": guidance, "seed": seed, "samples": n, "dtype": str(dtype), "stride": stride,
                "shard_size": self.shard_size}

    def folder(self, desc: dict) -> Path:
        key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:20]
        return self.root / f"{desc['model']}-{key}"

    @staticmethod
    def _shard_path(folder: Path, k: int) -> Path:
        return folder / f"shard-{k:05d}.safetensors"

    def _shards(self, n: int) -> list[tuple[int, int]]:
        return [(lo, min(lo + self.shard_size, n)) for lo in range(0, n, self.shard_size)]

    def get(self, entry, spec: str, guidance: float, seed: int, n: int, dtype, stride: int, compute) -> Reference:
        """The cached references, computing (and storing) whatever is missing or corrupt.

        ``compute(lo, hi)`` returns ``(noise, labels, Reference)`` for samples ``[lo, hi)``.
        """
        desc = self.describe(entry, spec, guidance, seed, n, dtype, stride)
        folder = self.folder(desc)
        manifest_path = folder / "manifest.json"
        manifest = {}
        if manifest_path.exists():
            try:
                manifest = json.loads(manifest_path.read_text())
                if manifest.get("description") != desc:
                    manifest = {}
            except (json.JSONDecodeError, OSError):
                manifest = {}
        checksums = dict(manifest.get("checksums", {}))
        shards = self._shards(n)
        mine = set(range(len(shards))[dd.my_slice(len(shards))])
        for k, (lo, hi) in enumerate(shards):
            path = self._shard_path(folder, k)
            ok = path.exists() and checksums.get(path.name) == _sha(path)
            if ok:
                continue
            if path.exists() or path.name in checksums:
                log.warning("reference cache: %s is missing, truncated or altered; regenerating it", path)
            if k in mine:
                t0 = time.perf_counter()
                noise, labels, ref = compute(lo, hi)
                seconds = time.perf_counter() - t0
                ref = _strided(ref, stride)
                tensors = {"noise": noise.contiguous(), "times": ref.times.contiguous(),
                           "states": ref.states.contiguous()}
                if labels is not None:
                    tensors["labels"] = labels.contiguous()
                with atomic.atomic_path(path) as tmp:
                    save_file(tensors, str(tmp), metadata={"compute_seconds": f"{seconds:.3f}"})
            checksums.pop(path.name, None)
        dd.barrier()
        # every rank agrees on the checksums of all shards, then rank 0 writes the manifest
        for k, _ in enumerate(shards):
            path = self._shard_path(folder, k)
            checksums[path.name] = _sha(path)
        if dd.is_main():
            atomic.write_text(manifest_path, json.dumps({"description": desc, "checksums": checksums}, indent=1))
        dd.barrier()
        parts = [load_file(str(self._shard_path(folder, k))) for k in range(len(shards))]
        states = torch.cat([p["states"] for p in parts], 1)
        return Reference(parts[0]["times"], states, spec)

    def compute_seconds(self, entry, spec: str, guidance: float, seed: int, n: int, dtype, stride: int):
        """Seconds the cached references took to compute, summed over shards (None if a shard predates the
        record or is missing): the cost a cost table should show, not the time a later run spent loading them."""
        folder = self.folder(self.describe(entry, spec, guidance, seed, n, dtype, stride))
        total = 0.0
        for k in range(len(self._shards(n))):
            path = self._shard_path(folder, k)
            try:
                with safe_open(str(path), "pt") as f:
                    total += float((f.metadata() or {})["compute_seconds"])
            except (OSError, KeyError, ValueError, SafetensorError):
                return None
        return total


def _strided(ref: Reference, stride: int) -> Reference:
    """Keep every ``stride``-th state (always the first and the last)."""
    if stride <= 1:
        return ref
    idx = list(range(0, len(ref.times), stride))
    if idx[-1] != len(ref.times) - 1:
        idx.append(len(ref.times) - 1)
    return Reference(ref.times[idx], ref.states[idx], ref.spec)
