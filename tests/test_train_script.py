"""scripts/train_fashion.py: a run interrupted and resumed from its saved state trains exactly as one that never
stopped (weights, EMA, optimiser, LR position, RNGs, epoch permutation), and a mismatched resume is refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from solversearch.data import fashion as fdata

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (fdata.fashion_dir() / "train-images-idx3-ubyte.gz").is_file(),
                                reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def _script(monkeypatch=None):
    spec = importlib.util.spec_from_file_location("train_fashion", ROOT / "scripts" / "train_fashion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if monkeypatch is not None:  # a 10-image "epoch": batch 4 starts a new permutation at step 3
        x, y = fdata.load_fashion("train")
        monkeypatch.setattr(mod, "load_fashion", lambda split: (x[:10], y[:10]))
    return mod


def _args(mod, tmp_path, *extra):
    return mod.parse_args(["--what", "fashion-rf", "--steps", "4", "--warmup", "2", "--seed", "3",
                           "--batch-size", "4", "--state", str(tmp_path / "state"), "--out", str(tmp_path / "out"),
                           *extra])


@pytest.mark.parametrize("interrupt_at", [1, 2])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, interrupt_at):
    mod = _script(monkeypatch)
    straight = mod.Run(_args(mod, tmp_path / "a"))
    losses = [straight.train_step() for _ in range(4)]

    first = mod.Run(_args(mod, tmp_path / "b"))
    for _ in range(interrupt_at):
        first.train_step()
    first.save()
    torch.manual_seed(12345)  # whatever ran in between must not leak into the resumed run
    second = mod.Run(_args(mod, tmp_path / "b"))
    assert second.load() and second.step == interrupt_at
    resumed = [second.train_step() for _ in range(4 - interrupt_at)]

    assert resumed == losses[interrupt_at:]
    for key in ("model", "ema"):
        resumed_state = getattr(second, key).state_dict()
        for name, value in getattr(straight, key).state_dict().items():
            assert torch.equal(value, resumed_state[name]), (key, name)
    assert second.sched.get_last_lr() == straight.sched.get_last_lr()


def test_resume_with_other_settings_is_refused_by_name(tmp_path, monkeypatch):
    mod = _script(monkeypatch)
    run = mod.Run(_args(mod, tmp_path))
    run.train_step()
    run.save()
    other = mod.Run(_args(mod, tmp_path, "--lr", "1e-3"))
    with pytest.raises(SystemExit) as e:
        other.load()
    assert "state.pt" in str(e.value) and "lr: saved 0.0008, asked 0.001" in str(e.value)


def test_unreadable_state_names_the_file(tmp_path, monkeypatch):
    mod = _script(monkeypatch)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.pt").write_bytes(b"not a state")
    with pytest.raises(SystemExit) as e:
        mod.Run(_args(mod, tmp_path)).load()
    assert str(tmp_path / "state" / "state.pt") in str(e.value)


def test_export_is_loadable_through_the_bundled_path_and_keeps_the_curve(tmp_path, monkeypatch):
    mod = _script(monkeypatch)
    run = mod.Run(_args(mod, tmp_path, "--log-every", "1"))
    run.train_step()
    run.curve.append({"step": 1, "loss": 1.0, "lr": 4e-4, "seconds": 0.1})
    run.export()
    from solversearch.integrations.diffusers_models import from_pretrained
    import json

    entry = from_pretrained(tmp_path / "out", prediction="flow", name="t", num_classes=10, null_label=10)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        out = entry.wrap(labels=torch.tensor([1, 2])).raw(x, 0.5)
    assert out.shape == x.shape and torch.isfinite(out).all()
    info = json.loads((tmp_path / "out" / "training.json").read_text())
    assert info["steps_done"] == 1 and info["curve"][0]["step"] == 1
