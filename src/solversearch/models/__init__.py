"""Models by name: what a network is, which schedule and prediction type it uses, how to draw its inputs.

Bundled now: the exact Gaussian-mixture models ``gmm-rf`` / ``gmm-vp`` (64-D, 10 classes) and their 2-D twins
``gmm2d-rf`` / ``gmm2d-vp`` (for pictures), and two real image models trained on Fashion-MNIST, ``fashion-rf`` /
``fashion-ddpm`` (diffusers UNets, :mod:`solversearch.models.fashion`; loading them needs diffusers).
A user's own network is wrapped with :class:`ModelEntry` directly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..conventions import DDPMDiscrete, RectifiedFlow, Schedule, VPLinear
from .gmm import GaussianMixture
from .wrapper import PREDICTION_TYPES, ModelError, WrappedModel, canonical_prediction

__all__ = ["ModelEntry", "get_model", "for_solver", "run_sizes", "MODELS", "WrappedModel", "ModelError", "PREDICTION_TYPES"]


@dataclass
class ModelEntry:
    """A network plus what it takes to sample from it.

    ``label_key`` is the keyword the network takes its class labels under (``class_labels`` for diffusers
    UNets and DiT); ``null_label`` is the label of the unconditional (dropped) class used by guidance.
    """

    name: str
    net: Callable
    schedule: Schedule
    prediction: str
    shape: tuple[int, ...]
    num_classes: int | None = None
    null_label: int | None = None
    label_key: str = "class_labels"
    exact: bool = False  # the network is the exact posterior: an accurate ODE solve is the ground truth
    description: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.prediction = canonical_prediction(self.prediction)

    def draw(self, n: int, seed: int, device="cpu", dtype=torch.float32):
        """Noise and labels for ``n`` samples, reproducible from ``seed`` (labels cycle through the classes)."""
        g = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((n, *self.shape), generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
        labels = None
        if self.num_classes:
            labels = torch.randint(0, self.num_classes, (n,), generator=g).to(device)
        return noise, labels

    def wrap(self, labels: torch.Tensor | None = None, guidance: float = 1.0, **kw) -> WrappedModel:
        cond = uncond = None
        if labels is not None:
            cond = {self.label_key: labels}
            if self.null_label is not None:
                uncond = {self.label_key: torch.full_like(labels, self.null_label)}
        elif guidance != 1.0:
            raise ValueError(f"model {self.name!r}: guidance needs class labels")
        return WrappedModel(self.net, self.schedule, self.prediction, cond=cond, uncond=uncond,
                            guidance=guidance, **kw)


def _gmm(name: str, schedule: Schedule, prediction: str, dim: int) -> ModelEntry:
    net = GaussianMixture(schedule, prediction, dim=dim, num_classes=10, per_class=3, seed=0)
    return ModelEntry(name, net, schedule, prediction, (dim,), num_classes=10, null_label=10, exact=True,
                      description=f"exact {dim}-D class-conditional Gaussian mixture, {schedule.name}, "
                                  f"{prediction} prediction")


def _fashion(name: str) -> ModelEntry:
    from .fashion import load_fashion_model  # imported on use: diffusers stays out of `import solversearch.models`

    return load_fashion_model(name)


MODELS: dict[str, Callable[[], ModelEntry]] = {
    "gmm-rf": lambda: _gmm("gmm-rf", RectifiedFlow(), "velocity", 64),
    "gmm-vp": lambda: _gmm("gmm-vp", VPLinear(), "epsilon", 64),
    "gmm2d-rf": lambda: _gmm("gmm2d-rf", RectifiedFlow(), "velocity", 2),
    "gmm2d-vp": lambda: _gmm("gmm2d-vp", VPLinear(), "epsilon", 2),
    "fashion-rf": lambda: _fashion("fashion-rf"),
    "fashion-ddpm": lambda: _fashion("fashion-ddpm"),
}


# search / evaluation sizes the CLI uses when not given: the exact models are cheap per call; on the image models
# every sample costs NFE network calls (and the evaluation target 200), so the defaults keep the main job on a
# 2-core CPU to minutes
# (select_samples: the samples on which the main job picks each classic solver's grid; None: all)
_SIZES = {"samples": 2048, "val_samples": 1024, "batch_size": 256, "epochs": 15, "eval_samples": 2048,
          "select_samples": None}
_IMAGE_SIZES = {"samples": 512, "val_samples": 256, "batch_size": 128, "epochs": 6, "eval_samples": 256,
                "select_samples": 32}


def run_sizes(name: str) -> dict:
    return dict(_IMAGE_SIZES if name.startswith("fashion-") else _SIZES)


def get_model(name: str) -> ModelEntry:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]()


def for_solver(entry: ModelEntry, solver_schedule: dict) -> ModelEntry:
    """``entry`` as a solver written for ``solver_schedule`` sees it.

    A model trained on the discrete DDPM table runs solvers written for its continuous twin (``vp-linear`` with
    ``beta_min = N beta_start``, ``beta_max = N beta_end``, network time ``N t``) the way the paper runs its DiT
    solvers: the schedule becomes the twin and the network is queried at the continuous time.  Anything else is
    returned unchanged (the runner then names a mismatch).
    """
    own = entry.schedule
    if not (isinstance(own, DDPMDiscrete) and solver_schedule.get("name") == "vp-linear"):
        return entry
    twin = VPLinear(beta_min=own.N * own.beta_start, beta_max=own.N * own.beta_end, time_scale=float(own.N))
    for key in ("beta_min", "beta_max", "time_scale"):
        if not math.isclose(float(solver_schedule.get(key, math.nan)), getattr(twin, key), rel_tol=1e-6):
            return entry
    return dataclasses.replace(entry, schedule=twin)
