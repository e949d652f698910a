#!/usr/bin/env python
"""Train the bundled Fashion-MNIST networks (run by hand; never in CI).

    python scripts/train_fashion.py --what classifier        # FD feature network, a few minutes
    nohup python scripts/train_fashion.py --what fashion-rf > runs/train-rf.log 2>&1 &     # hours; resumable
    nohup python scripts/train_fashion.py --what fashion-ddpm > runs/train-ddpm.log 2>&1 &
    python scripts/train_fashion.py --what fashion-rf --export   # bundle the EMA weights of the saved state now

A model run keeps its **full training state** (weights, EMA, AdamW moments, LR-schedule position, every RNG, the
epoch permutation, the step, the loss curve) in ``training/<what>/``, rewritten atomically every
``--save-minutes`` and when the process is interrupted (Ctrl-C, SIGTERM); starting the same command again resumes
from it bit-for-bit on the same machine and thread count.  The state lives in the repository (``training/`` is
tracked) so a run survives the machine, not only the process.  When the run reaches ``--steps`` its EMA weights are
exported as a diffusers folder into the bundled location (``src/solversearch/weights/<what>``) with
``training.json`` (settings, wall time, the loss curve); ``--export`` does that early from the saved state.

The objectives are :func:`solversearch.models.fashion.training_batch` (rectified flow: sigma ~ U[0, 1], see its
docstring for why; DDPM: uniform integer timesteps), plain MSE, AdamW with linear warmup then cosine decay to 10%,
bf16 autocast (CPU bf16 kernels train ~1.5x faster than fp32 here; weights, EMA and optimiser stay fp32), gradient
clipping, and an EMA of the weights (what is exported: it samples better than the last iterate).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import platform
import signal
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

from solversearch.atomic import atomic_dir, atomic_path, write_text  # noqa: E402
from solversearch.data.fashion import load_fashion  # noqa: E402
from solversearch.evaluation import fd as fdmod  # noqa: E402
from solversearch.models import fashion  # noqa: E402

STATE_ROOT = ROOT / "training"
STATE_FILE, CURVE_FILE = "state.pt", "curve.json"
DEFAULTS = {  # what: (steps, peak lr, warmup steps, EMA decay)
    "classifier": (2500, 2e-3, 200, 0.0),
    "fashion-rf": (10000, 8e-4, 500, 0.9995),  # ~21 epochs of batch 128
    "fashion-ddpm": (10000, 8e-4, 500, 0.9995),
}
# Settings a resumed run must share with the state it resumes (the rest, e.g. --threads, may change).
RESUME_KEYS = ("what", "steps", "batch_size", "lr", "warmup", "weight_decay", "ema", "label_dropout", "seed",
               "bf16", "arch")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", required=True, choices=sorted(DEFAULTS))
    p.add_argument("--steps", type=int, help="optimiser steps of the whole run (default: classifier 2500, "
                                             "models 10000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, help="peak AdamW learning rate (default: classifier 2e-3, models 8e-4)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: classifier 1e-4, models 0)")
    p.add_argument("--warmup", type=int, help="linear warmup steps (default: classifier 200, models 500)")
    p.add_argument("--ema", type=float, help="EMA decay of the exported weights (models; default 0.9995); step n "
                                             "uses min(ema, (1+n)/(10+n)), so early steps average less")
    p.add_argument("--label-dropout", type=float, default=0.1,
                   help="fraction of labels replaced by the null label 10 (classifier-free guidance)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in fp32 instead of bf16 autocast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--save-minutes", type=float, default=5.0, help="write the training state every N minutes")
    p.add_argument("--log-every", type=int, default=50, help="a point of the loss curve every N steps")
    p.add_argument("--state", type=Path, help="training-state folder (default: training/<what>)")
    p.add_argument("--out", type=Path, help="export folder (default: the bundled folder in src/solversearch/weights)")
    p.add_argument("--export", action="store_true", help="export the EMA weights of the saved state and exit")
    p.add_argument("--max-minutes", type=float, help="stop (state saved) after this many minutes of this process")
    a = p.parse_args(argv)
    steps, lr, warmup, ema = DEFAULTS[a.what]
    a.steps = steps if a.steps is None else a.steps
    a.lr = lr if a.lr is None else a.lr
    a.warmup = warmup if a.warmup is None else a.warmup
    a.ema = ema if a.ema is None else a.ema
    if a.weight_decay is None:
        a.weight_decay = 1e-4 if a.what == "classifier" else 0.0
    if a.out is None:
        a.out = fdmod.CLASSIFIER_DIR if a.what == "classifier" else fashion.model_dir(a.what)
    if a.state is None:
        a.state = STATE_ROOT / a.what
    if a.steps <= 0 or a.batch_size <= 0:
        p.error("--steps and --batch-size must be positive")
    a.arch = None if a.what == "classifier" else fashion.architecture_config(a.what)
    return a


def lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Batches:
    """Shuffled minibatches, epoch after epoch, from a seeded generator; its position is part of the state."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.bs, self.g = n, batch_size, generator
        self.perm, self.pos = torch.randperm(n, generator=generator), 0

    def next(self) -> torch.Tensor:
        if self.pos + self.bs > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.g), 0
        idx = self.perm[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return idx


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def settings(args) -> dict:
    return {k: getattr(args, k) for k in RESUME_KEYS}


def meta(args, steps_done: int, seconds: float, **extra) -> dict:
    try:
        import diffusers
        dv = diffusers.__version__
    except ImportError:
        dv = None
    out = {**settings(args), "steps_done": steps_done, "threads": args.threads, "seconds": round(seconds, 1),
           "torch": torch.__version__, "diffusers": dv, "python": platform.python_version(), **extra}
    out.pop("arch", None)
    return out


class Run:
    """Everything a model run changes as it trains: saved whole, restored whole."""

    def __init__(self, args):
        self.args = args
        self.images, self.labels = load_fashion("train")
        torch.manual_seed(args.seed)
        self.g = torch.Generator().manual_seed(args.seed)
        self.model = fashion.build_model(args.what).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, args.steps, args.warmup))
        self.batches = Batches(len(self.images), args.batch_size, self.g)
        self.step, self.seconds, self.avg, self.curve = 0, 0.0, None, []

    # --- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"settings": json.dumps(settings(self.args), sort_keys=True), "step": self.step,
                "seconds": self.seconds, "avg": self.avg, "model": self.model.state_dict(),
                "ema": self.ema.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "rng_torch": torch.get_rng_state(), "rng_batches": self.g.get_state(),
                "perm": self.batches.perm, "pos": self.batches.pos}

    def save(self) -> None:
        """State file first, then the curve: each is replaced atomically, so a crash leaves a loadable pair."""
        path = self.args.state / STATE_FILE
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)
        write_text(self.args.state / CURVE_FILE, json.dumps({"settings": meta(self.args, self.step, self.seconds),
                                                             "curve": self.curve}, indent=0) + "\n")

    def load(self) -> bool:
        path = self.args.state / STATE_FILE
        if not path.is_file():
            return False
        try:
            st = torch.load(path, weights_only=True, map_location="cpu")
            saved = json.loads(st["settings"])
        except Exception as e:  # noqa: BLE001 - any unreadable state is one clear error
            raise SystemExit(f"{path}: not a readable training state ({type(e).__name__}: {e}); move it away to "
                             "start afresh") from None
        now = json.loads(json.dumps(settings(self.args), sort_keys=True))
        diff = {k: (saved.get(k), now[k]) for k in now if saved.get(k) != now[k]}
        if diff:
            raise SystemExit(f"{path}: the saved run has other settings than this command ("
                             + ", ".join(f"{k}: saved {a!r}, asked {b!r}" for k, (a, b) in diff.items())
                             + "); pass the saved ones, or --state another folder")
        self.model.load_state_dict(st["model"])
        self.ema.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["opt"])
        self.sched.load_state_dict(st["sched"])
        torch.set_rng_state(st["rng_torch"])
        self.g.set_state(st["rng_batches"])
        self.batches.perm, self.batches.pos = st["perm"], int(st["pos"])
        self.step, self.seconds, self.avg = int(st["step"]), float(st["seconds"]), st["avg"]
        curve_path = self.args.state / CURVE_FILE
        if curve_path.is_file():
            self.curve = [p for p in json.loads(curve_path.read_text())["curve"] if p["step"] <= self.step]
        return True

    # --- training ------------------------------------------------------------------------------------------
    def train_step(self) -> float:
        a = self.args
        idx = self.batches.next()
        batch = fashion.training_batch(a.what, self.images[idx], self.labels[idx], self.g, a.label_dropout)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else contextlib.nullcontext()
        with autocast:
            loss = fashion.training_loss(self.model, batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        ema_update(self.ema, self.model, min(a.ema, (1 + self.step) / (10 + self.step)))
        self.step += 1
        value = float(loss.detach())
        self.avg = value if self.avg is None else 0.99 * self.avg + 0.01 * value
        return value

    def export(self) -> None:
        a = self.args
        with atomic_dir(a.out) as tmp:
            self.ema.save_pretrained(str(tmp / fashion.model_subfolder(a.what)), safe_serialization=True)
            fashion.scheduler_for(a.what).save_pretrained(str(tmp / "scheduler"))
            info = meta(a, self.step, self.seconds, train_loss_running=round(self.avg or float("nan"), 5),
                        curve=self.curve)
            (tmp / "training.json").write_text(json.dumps(info, indent=0) + "\n", encoding="utf-8")


def train_model(args) -> None:
    from tqdm import tqdm

    run = Run(args)
    resumed = run.load()
    if args.export:
        if not resumed:
            raise SystemExit(f"no training state in {args.state} to export")
        run.export()
        print(f"exported the EMA weights of step {run.step} to {args.out}")
        return
    n_params = sum(p.numel() for p in run.model.parameters())
    print(f"{args.what}: {n_params / 1e6:.3f} M parameters, {args.steps} steps of {args.batch_size}, "
          f"{'resumed at step ' + str(run.step) if resumed else 'new run'}, {args.threads} thread(s); "
          f"state {args.state}, export {args.out}", flush=True)
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    t_start = time.perf_counter()
    t_last, t_saved, window = t_start, t_start, []
    bar = tqdm(total=args.steps, initial=run.step, mininterval=30, ncols=100)
    while run.step < args.steps and stop["signal"] is None:
        window.append(run.train_step())
        now = time.perf_counter()
        run.seconds += now - t_last
        t_last = now
        bar.update(1)
        bar.set_postfix(loss=f"{run.avg:.4f}", refresh=False)
        if run.step % args.log_every == 0:
            run.curve.append({"step": run.step, "loss": round(sum(window) / len(window), 5),
                              "lr": round(run.sched.get_last_lr()[0], 7), "seconds": round(run.seconds, 1)})
            window = []
        if now - t_saved > 60 * args.save_minutes:
            run.save()
            t_saved = now
        if args.max_minutes is not None and now - t_start > 60 * args.max_minutes:
            break
    bar.close()
    run.save()
    if run.step >= args.steps:
        run.export()
        print(f"done: {run.step} steps in {run.seconds:.0f} s ({run.seconds / run.step:.2f} s/step), final loss "
              f"(running) {run.avg:.4f}; EMA weights in {args.out}", flush=True)
    else:
        why = f"signal {stop['signal']}" if stop["signal"] else "--max-minutes"
        print(f"stopped by {why} at step {run.step} ({run.seconds:.0f} s of training); state saved in "
              f"{args.state}: run the same command to resume", flush=True)


@torch.no_grad()
def accuracy(model, images, labels, batch_size: int = 500) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in zip(images.split(batch_size),
                                                                       labels.split(batch_size)))
    return correct / len(labels)


def train_classifier(args) -> None:
    from safetensors.torch import save_file
    from tqdm import tqdm

    images, labels = load_fashion("train")
    test_x, test_y = load_fashion("test")
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    model = fdmod.FashionClassifier().train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps, args.warmup))
    batches = Batches(len(images), args.batch_size, g)
    print(f"classifier: {sum(p.numel() for p in model.parameters())} parameters, {args.steps} steps of "
          f"{args.batch_size} -> {args.out}", flush=True)
    t0, avg = time.perf_counter(), None
    bar = tqdm(range(args.steps), mininterval=10, ncols=100)
    for step in bar:
        idx = batches.next()
        x = images[idx]
        flip = torch.rand(len(idx), generator=g) < 0.5  # horizontal flips: clothes are left-right symmetric
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        loss = torch.nn.functional.cross_entropy(model(x), labels[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        bar.set_postfix(loss=f"{avg:.4f}", refresh=False)
    wall = time.perf_counter() - t0
    acc = accuracy(model, test_x, test_y)
    config = {"arch": model.arch, "test_accuracy": round(acc, 4), "feature_layer": "global-average-pooled 1x1 conv",
              "label_smoothing": 0.05, "augment": "random horizontal flips",
              **{k: v for k, v in meta(args, args.steps, wall).items()
                 if k not in ("ema", "label_dropout", "bf16")}}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(args.out) as tmp:
        save_file(state, str(tmp / fdmod.CLASSIFIER_WEIGHTS))
        (tmp / fdmod.CLASSIFIER_CONFIG).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    print(f"done: {args.steps} steps in {wall:.0f} s; test accuracy {acc:.4f}; saved to {args.out}", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.what == "classifier":
        train_classifier(args)
    else:
        train_model(args)


if __name__ == "__main__":
    main()
