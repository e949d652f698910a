"""Scale-out: data-parallel search on torch.distributed (gloo), reference cache integrity, checkpoint/resume
that survives SIGKILL bit-identically, gradient checkpointing."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from solversearch.models import get_model
from solversearch.search import checkpoint as ckpt
from solversearch.search.cache import ReferenceCache
from solversearch.search.search import SearchConfig, prepare_references, search
from solversearch.solvers import classic
from solversearch.solvers.solver import run_linear

QUIET = dict(progress=False, log=lambda m: None)


def small(**kw):
    base = dict(nfe=4, samples=64, val_samples=32, batch_size=16, epochs=2, init="ab2", dtype="float64")
    base.update(kw)
    return SearchConfig(**base)


def _rank_main(rank, world, init_file, cache, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    res = search(get_model("gmm2d-rf"), small(batch_size=8), cache_dir=cache, **QUIET)
    if rank == 0:
        torch.save({"times": res.solver.time_tensor(), "M": res.solver.matrix()}, out)
    dist.destroy_process_group()


def test_two_gloo_processes_match_one_process_with_double_batch(tmp_path):
    out = tmp_path / "two.pt"
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path / "cache"), str(out)), nprocs=2)
    two = torch.load(out, weights_only=True)
    torch.set_num_threads(1)
    one = search(get_model("gmm2d-rf"), small(batch_size=16), cache_dir=tmp_path / "cache1", **QUIET).solver
    start = classic.build("ab2", 4, get_model("gmm2d-rf").schedule, "uniform-t")
    assert not torch.allclose(one.matrix(), start.matrix())  # the search moved
    torch.testing.assert_close(two["times"], one.time_tensor(), atol=1e-9, rtol=0)
    torch.testing.assert_close(two["M"], one.matrix(), atol=1e-9, rtol=0)


def test_reference_cache_reuses_and_regenerates_corrupt_shards(tmp_path, caplog):
    entry = get_model("gmm2d-vp")
    cfg = small(samples=40, val_samples=20)
    cache = ReferenceCache(tmp_path, shard_size=16)
    calls = []
    first = prepare_references(entry, cfg, cache_dir=tmp_path)
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    shards = sorted(p for f in folders for p in f.glob("shard-*.safetensors"))
    assert len(folders) == 2 and len(shards) == 2  # train and validation sets, one shard each (1024 per shard)
    manifest = json.loads((folders[0] / "manifest.json").read_text())
    assert manifest["description"]["reference"] == "dpm++3m:100:uniform-lambda"
    assert set(manifest["checksums"]) == {shards[0].name} or set(manifest["checksums"]) == {shards[1].name}

    # a second run reads the cache: identical tensors, nothing recomputed
    again = prepare_references(entry, cfg, cache_dir=tmp_path)
    assert torch.equal(again.train.states, first.train.states)

    # truncate one shard and flip a byte in the other: both are detected and regenerated
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[: len(data) // 2])
    raw = bytearray(shards[1].read_bytes())
    raw[-5] ^= 0xFF
    shards[1].write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="solversearch.search.cache"):
        fixed = prepare_references(entry, cfg, cache_dir=tmp_path)
    assert sum("regenerating" in r.message for r in caplog.records) == 2
    assert torch.equal(fixed.train.states, first.train.states) and torch.equal(fixed.val.states, first.val.states)

    # the cache key separates what differs: another guidance gets its own entry
    def compute(lo, hi):
        calls.append((lo, hi))
        return first.train_noise[lo:hi], first.train_labels[lo:hi], first.train.index(slice(lo, hi))

    key = (entry, cfg.resolved(entry.schedule).reference, 2.0, 0, 40, torch.float64, 1)
    cache.get(*key, compute)
    assert calls == [(0, 16), (16, 32), (32, 40)]


def test_reference_cache_reports_the_compute_cost_not_the_load_time(tmp_path):
    """A cost table must show what the references cost to compute, also in a run that only loads them."""
    entry = get_model("gmm2d-vp")
    cfg = small(samples=40, val_samples=20)
    first = prepare_references(entry, cfg)
    cache = ReferenceCache(tmp_path, shard_size=16)
    key = (entry, cfg.resolved(entry.schedule).reference, 1.0, 0, 40, torch.float64, 1)

    def slow(lo, hi):  # each shard takes at least 0.1 s to "compute"
        time.sleep(0.1)
        return first.train_noise[lo:hi], None, first.train.index(slice(lo, hi))

    cache.get(*key, slow)
    assert cache.compute_seconds(*key) >= 0.3  # three shards
    cache.get(*key, lambda lo, hi: pytest.fail("a cached shard was recomputed"))
    assert cache.compute_seconds(*key) >= 0.3  # still the compute cost after a load
    refs = prepare_references(entry, cfg, cache_dir=tmp_path / "prep")
    assert refs.build_seconds is not None and refs.build_seconds > 0
    again = prepare_references(entry, cfg, cache_dir=tmp_path / "prep")
    assert again.build_seconds == refs.build_seconds  # read back from the shards, not re-timed
    # a shard written before the cost was recorded gives "unknown", not a made-up number
    shard = next(cache.folder(cache.describe(*key)).glob("shard-00000.safetensors"))
    tensors = load_file(str(shard))
    save_file(tensors, str(shard))
    assert cache.compute_seconds(*key) is None


RUNNER = r"""
import sys, torch
torch.set_num_threads(1)
from solversearch.models import get_model
from solversearch.search.search import SearchConfig, search
cfg = SearchConfig(nfe=4, samples=64, val_samples=32, batch_size=8, epochs=3, init="ab2", dtype="float64",
                   checkpoint_every=1)
res = search(get_model("gmm2d-rf"), cfg, progress=False, log=lambda m: None, checkpoint_path=sys.argv[1],
             resume=True, cache_dir=sys.argv[2])
torch.save({"times": res.solver.time_tensor(), "M": res.solver.matrix(), "hist": [h["val_rmse"] for h in res.history]},
           sys.argv[3])
"""


def _run(args, **kw):
    return subprocess.Popen([sys.executable, "-c", RUNNER, *map(str, args)], **kw)


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    cache = tmp_path / "cache"
    full = tmp_path / "full.pt"
    assert _run([tmp_path / "none.ckpt", cache, full]).wait() == 0
    reference = torch.load(full, weights_only=True)

    ck = tmp_path / "run.ckpt"
    for kill_at in (3, 11, 19):  # optimizer steps (8 per epoch): mid-epoch, epoch 2, epoch 3
        proc = _run([ck, cache, tmp_path / "never.pt"])
        deadline = time.time() + 120
        while time.time() < deadline:
            if ck.exists():
                try:
                    if torch.load(ck, weights_only=True)["step"] >= kill_at:
                        break
                except Exception:
                    pass
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert torch.load(ck, weights_only=True)["step"] >= 19
    resumed = tmp_path / "resumed.pt"
    assert _run([ck, cache, resumed]).wait() == 0
    got = torch.load(resumed, weights_only=True)
    assert torch.equal(got["times"], reference["times"]) and torch.equal(got["M"], reference["M"])
    assert got["hist"] == reference["hist"]


def test_sigterm_checkpoints_and_resume_finishes(tmp_path):
    cache, ck, out = tmp_path / "cache", tmp_path / "run.ckpt", tmp_path / "out.pt"
    proc = _run([ck, cache, out], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not ck.exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode != 0 and b"SearchInterrupted" in err and not out.exists()
    assert _run([ck, cache, out]).wait() == 0 and out.exists()


def test_checkpoint_of_another_search_is_refused(tmp_path):
    path = tmp_path / "c.ckpt"
    ckpt.save(path, {"step": 1}, {"nfe": 4})
    with pytest.raises(ValueError, match="differs in: nfe"):
        ckpt.load(path, {"nfe": 5})
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable search checkpoint"):
        ckpt.load(path, {"nfe": 4})


def test_gradient_checkpointing_gives_the_same_gradients():
    entry = get_model("gmm2d-vp")
    noise, labels = entry.draw(16, seed=3, dtype=torch.float64)
    model = entry.wrap(labels)
    base = classic.build("dpm++2m", 5, entry.schedule, "uniform-lambda")
    grads = []
    for use in (False, True):
        times = base.time_tensor().clone().requires_grad_(True)
        M = base.matrix().clone().requires_grad_(True)
        x = run_linear(model, noise, times, M, "data", entry.schedule, grad_checkpoint=use)
        (x**2).sum().backward()
        grads.append((times.grad, M.grad))
    assert grads[0][1].abs().sum() > 0
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-10, rtol=1e-9)
