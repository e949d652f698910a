#!/usr/bin/env python
"""Train the bundled Fashion-MNIST networks (run by hand, once; never in CI).

    python scripts/train_fashion.py --what classifier            # FD feature network, a few minutes
    python scripts/train_fashion.py --what fashion-rf --steps 1250 --threads 1 --seed 1
    python scripts/train_fashion.py --what fashion-ddpm --steps 1250 --threads 1 --seed 2

The objectives are :func:`solversearch.models.fashion.training_batch` (rectified flow: sigma ~ U[0, 1], see its
docstring for why; DDPM: uniform integer timesteps), plain MSE, AdamW with linear warmup then cosine decay to 10%,
and an EMA of the weights (what is saved: it samples better than the last iterate).  Everything random comes from
``--seed``, so a run is reproducible on the same machine and thread count.  The output folder is written atomically
(temp folder beside it, then swapped in), every ``--save-every`` steps and at the end, so an interrupted run
still leaves its latest complete model.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

from solversearch.atomic import atomic_dir  # noqa: E402
from solversearch.data.fashion import load_fashion  # noqa: E402
from solversearch.evaluation import fd as fdmod  # noqa: E402
from solversearch.models import fashion  # noqa: E402

DEFAULTS = {  # what: (steps, peak lr, warmup steps); the models' step count fits ~70 min on one busy core
    "classifier": (2500, 2e-3, 200),
    "fashion-rf": (1250, 5e-4, 100),
    "fashion-ddpm": (1250, 5e-4, 100),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", required=True, choices=sorted(DEFAULTS))
    p.add_argument("--steps", type=int, help="optimiser steps (default: classifier 2500, models 1250)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, help="peak AdamW learning rate (default: classifier 2e-3, models 5e-4)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: classifier 1e-4, models 0)")
    p.add_argument("--warmup", type=int, help="linear warmup steps (default: classifier 200, models 100)")
    p.add_argument("--ema", type=float, default=0.999,
                   help="EMA decay of the saved weights (models only); step n uses min(ema, (1+n)/(10+n)), so a "
                        "short run averages over roughly its last tenth")
    p.add_argument("--label-dropout", type=float, default=0.1,
                   help="fraction of labels replaced by the null label 10 (classifier-free guidance)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--save-every", type=int, default=250, help="write the model every N steps (0: only at the end)")
    p.add_argument("--out", type=Path, help="output folder (default: the bundled folder in src/solversearch/weights)")
    a = p.parse_args(argv)
    steps, lr, warmup = DEFAULTS[a.what]
    a.steps = steps if a.steps is None else a.steps
    a.lr = lr if a.lr is None else a.lr
    a.warmup = warmup if a.warmup is None else a.warmup
    if a.weight_decay is None:
        a.weight_decay = 1e-4 if a.what == "classifier" else 0.0
    if a.out is None:
        a.out = fdmod.CLASSIFIER_DIR if a.what == "classifier" else fashion.model_dir(a.what)
    if a.steps <= 0 or a.batch_size <= 0:
        p.error("--steps and --batch-size must be positive")
    return a


def lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Batches:
    """Shuffled minibatches, epoch after epoch, from a seeded generator."""

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


def meta(args, steps_done: int, seconds: float, **extra) -> dict:
    try:
        import diffusers
        dv = diffusers.__version__
    except ImportError:
        dv = None
    return {"what": args.what, "steps": steps_done, "batch_size": args.batch_size, "lr": args.lr,
            "warmup": args.warmup, "weight_decay": args.weight_decay, "ema": args.ema,
            "label_dropout": args.label_dropout, "seed": args.seed,
            "threads": args.threads, "seconds": round(seconds, 1), "torch": torch.__version__,
            "diffusers": dv, "python": platform.python_version(), **extra}


def save_model(args, ema, steps_done: int, seconds: float, loss: float) -> None:
    with atomic_dir(args.out) as tmp:
        ema.save_pretrained(str(tmp / "unet"), safe_serialization=True)
        fashion.scheduler_for(args.what).save_pretrained(str(tmp / "scheduler"))
        info = meta(args, steps_done, seconds, train_loss_running=round(loss, 5))
        (tmp / "training.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


def train_model(args) -> None:
    from tqdm import tqdm

    images, labels = load_fashion("train")
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    model = fashion.build_unet().train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps, args.warmup))
    batches = Batches(len(images), args.batch_size, g)
    print(f"{args.what}: {n_params / 1e6:.3f} M parameters, {args.steps} steps of {args.batch_size}, "
          f"{args.threads} thread(s) -> {args.out}", flush=True)
    t0, avg = time.perf_counter(), None
    bar = tqdm(range(args.steps), mininterval=10, dynamic_ncols=False, ncols=100)
    for step in bar:
        idx = batches.next()
        batch = fashion.training_batch(args.what, images[idx], labels[idx], g, args.label_dropout)
        loss = fashion.training_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema_update(ema, model, min(args.ema, (1 + step) / (10 + step)))
        avg = loss.item() if avg is None else 0.99 * avg + 0.01 * loss.item()
        bar.set_postfix(loss=f"{avg:.4f}", refresh=False)
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            save_model(args, ema, step + 1, time.perf_counter() - t0, avg)
            tqdm.write(f"step {step + 1}: loss {avg:.4f}, {time.perf_counter() - t0:.0f} s, saved", file=sys.stdout)
    wall = time.perf_counter() - t0
    save_model(args, ema, args.steps, wall, avg)
    print(f"done: {args.steps} steps in {wall:.0f} s ({wall / args.steps:.2f} s/step), final loss (running) "
          f"{avg:.4f}; EMA weights in {args.out}", flush=True)


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
              **{k: v for k, v in meta(args, args.steps, wall).items() if k not in ("ema", "label_dropout")}}
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
