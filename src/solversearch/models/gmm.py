"""Exact test models: class-conditional Gaussian mixtures with closed-form predictions.

For data ``x0 ~ sum_k pi_k N(mu_k, diag(s_k^2))`` on the path ``x = alpha x0 + sigma eps`` the marginal is again a
Gaussian mixture and ``E[x0 | x_t]`` is closed form, so the network is *exact*: every error a solver shows is
its own integration error, measured against the exact ODE solution (torchdiffeq dopri5 at tight tolerance).
Each class owns its own components; the null class (label ``num_classes``) is the whole mixture, which is what
classifier-free guidance contrasts against.
"""

from __future__ import annotations

import math

import torch

from ..conventions import Schedule
from .wrapper import from_x0_eps


class GaussianMixture(torch.nn.Module):
    """A frozen class-conditional mixture that answers like a trained network: ``net(x, t_model, class_labels)``.

    ``t_model`` is the network time input; the schedule's ``model_time`` is inverted to get back the schedule
    time (the exact model needs it, a trained one would not care).
    """

    def __init__(self, schedule: Schedule, prediction: str, dim: int = 64, num_classes: int = 10,
                 per_class: int = 3, seed: int = 0, spread: float = 1.0, scale_range=(0.05, 0.4)):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        k = num_classes * per_class
        means = torch.randn(k, dim, generator=g, dtype=torch.float64) * spread / math.sqrt(2.0)
        # classes are clusters of components: a class centre plus a smaller offset per component
        centres = torch.randn(num_classes, dim, generator=g, dtype=torch.float64) * spread
        means = 0.5 * means + centres.repeat_interleave(per_class, 0)
        lo, hi = scale_range
        scales = lo + (hi - lo) * torch.rand(k, dim, generator=g, dtype=torch.float64)
        logits = torch.randn(k, generator=g, dtype=torch.float64) * 0.5
        self.register_buffer("means", means)
        self.register_buffer("scales", scales)
        self.register_buffer("logits", logits)
        self.register_buffer("owner", torch.arange(num_classes).repeat_interleave(per_class))
        self.schedule, self.prediction = schedule, prediction
        self.dim, self.num_classes = dim, num_classes

    @property
    def null_label(self) -> int:
        return self.num_classes

    def schedule_time(self, t_model: torch.Tensor) -> torch.Tensor:
        # model_time is affine for every schedule here: recover t from two evaluations
        t0 = self.schedule.model_time(torch.tensor(0.0, dtype=torch.float64))
        t1 = self.schedule.model_time(torch.tensor(1.0, dtype=torch.float64))
        return (t_model.to(torch.float64) - t0) / (t1 - t0)

    def posterior(self, x: torch.Tensor, t: torch.Tensor, class_labels=None):
        """``(E[x0 | x_t], E[eps | x_t])`` in float64, restricted to a class's components when labelled.

        Both are computed from the component posteriors, so they stay finite where ``sigma = 0`` (the
        rectified-flow data end), and ``alpha x0 + sigma eps = x`` holds exactly.
        """
        x = x.to(torch.float64)
        t = t.to(torch.float64).reshape(-1)
        if t.numel() > 1 and not bool((t == t[0]).all()):
            return self._posterior_per_sample(x, t, class_labels)
        # one time for the whole batch (every solver step): (K, D) variances, and the quadratic form
        # sum_d (x - a mu)^2 / var expands into matrix products -- ~100x faster than (B, K, D) arrays
        a, s = self.schedule.alpha(t[0]), self.schedule.sigma(t[0])
        iv = 1.0 / (a**2 * self.scales**2 + s**2)  # (K, D)
        q = (x * x) @ iv.T - 2 * a * x @ (self.means * iv).T + a**2 * (self.means**2 * iv).sum(-1)  # (B, K)
        logp = 0.5 * (torch.log(iv).sum(-1) - q) + torch.log_softmax(self.logits, 0)
        w = torch.softmax(self._mask(logp, class_labels), -1)  # (B, K)
        g = a * self.scales**2 * iv  # x0 = sum_k w_k (mu_k + g_k (x - a mu_k))
        h = s * iv  # eps = sum_k w_k h_k (x - a mu_k)
        x0 = w @ (self.means - a * g * self.means) + x * (w @ g)
        eps = x * (w @ h) - a * (w @ (h * self.means))
        return x0, eps

    def _mask(self, logp, class_labels):
        if class_labels is None:
            return logp
        labels = class_labels.reshape(-1, 1).to(self.owner.device)
        allowed = (self.owner[None, :] == labels) | (labels == self.num_classes)
        return logp.masked_fill(~allowed, float("-inf"))

    def _posterior_per_sample(self, x, t, class_labels):
        """The same with a time per sample, on (B, K, D) arrays."""
        t = t.reshape(-1, 1, 1)
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        var = a**2 * self.scales**2 + s**2  # (B, K, D)
        diff = x[:, None, :] - a * self.means  # (B, K, D)
        logp = -0.5 * (diff**2 / var + torch.log(var)).sum(-1) + torch.log_softmax(self.logits, 0)
        w = torch.softmax(self._mask(logp, class_labels), -1)[..., None]  # (B, K, 1)
        x0 = (w * (self.means + a * self.scales**2 / var * diff)).sum(1)
        eps = (w * (s / var * diff)).sum(1)
        return x0, eps

    def forward(self, x: torch.Tensor, t_model: torch.Tensor, class_labels=None) -> torch.Tensor:
        t = self.schedule_time(t_model).expand(x.shape[0])
        x0, eps = self.posterior(x, t, class_labels)
        return from_x0_eps(x0, eps, t.reshape(-1, 1), self.schedule, self.prediction).to(x.dtype)

    def sample_data(self, n: int, class_labels=None, generator=None) -> torch.Tensor:
        """Exact samples of the data distribution (per class when labels are given)."""
        if class_labels is None:
            comp = torch.multinomial(torch.softmax(self.logits, 0), n, replacement=True, generator=generator)
        else:
            logits = self.logits.expand(n, -1).masked_fill(self.owner[None, :] != class_labels[:, None],
                                                           float("-inf"))
            comp = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[comp] + self.scales[comp] * z
