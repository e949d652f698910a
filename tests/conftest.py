"""Shared fixtures: a fixed thread count and seed, exact single-Gaussian problems, and one cached set of exact
(dopri5) solutions of the bundled mixture models that several test files score solvers against."""

from __future__ import annotations

import pytest
import torch

from solversearch.models import get_model
from solversearch.models.gmm import GaussianMixture
from solversearch.models.wrapper import WrappedModel
from solversearch.search.reference import ode_solve

# One intra-op thread: the models here are small, and on a busy 2-core machine every multi-threaded torch op pays
# for an OpenMP barrier (measured: ~12 ms per softmax with 2 threads under load, ~2 us with 1).
torch.set_num_threads(1)

EVAL_SAMPLES = 512  # the held-out set every accuracy comparison is scored on
EVAL_SEED = 424242  # not a seed the search draws its train/val noise from (2*seed, 2*seed+1 for small seeds)
# dopri5 tolerance of the "exact" targets: its error (RMSE ~1e-5 against rtol 1e-7) is far below every margin the
# comparisons rely on (>= 5e-3 RMSE), at half the cost of the tightest setting.
EXACT_RTOL, EXACT_ATOL = 1e-5, 1e-7


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class SingleGaussian:
    """A one-component mixture N(mu, diag(s^2)) whose probability-flow ODE is solved in closed form.

    For Gaussian data the marginal at t is N(alpha mu, alpha^2 s^2 + sigma^2) and the flow maps standardised
    coordinates to themselves: x_t = alpha_t mu + sqrt(alpha_t^2 s^2 + sigma_t^2) z with z fixed by the start.
    """

    def __init__(self, schedule, prediction, *, seed=0, dim=4, scale_range=(0.3, 0.6), n=16):
        self.schedule = schedule
        self.net = GaussianMixture(schedule, prediction, dim=dim, num_classes=1, per_class=1, seed=seed,
                                   scale_range=scale_range)
        self.model = WrappedModel(self.net, schedule, prediction)
        g = torch.Generator().manual_seed(1000 + seed)
        self.noise = torch.randn(n, dim, generator=g, dtype=torch.float64)
        self.mu, self.s = self.net.means[0], self.net.scales[0]

    def std(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        return torch.sqrt(a**2 * self.s**2 + s**2)

    def exact(self, t_start, t_end):
        """The exact state at ``t_end`` of the trajectory that is ``self.noise`` at ``t_start``."""
        a0 = self.schedule.alpha(torch.as_tensor(t_start, dtype=torch.float64))
        a1 = self.schedule.alpha(torch.as_tensor(t_end, dtype=torch.float64))
        z = (self.noise - a0 * self.mu) / self.std(t_start)
        return a1 * self.mu + self.std(t_end) * z


@pytest.fixture(scope="session")
def exact_eval():
    """``get(name) -> (entry, noise, labels, target)``: EVAL_SAMPLES float64 noises of a bundled model and the
    dopri5 solution of the probability-flow ODE from the schedule's noise end to its data end (computed once)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            entry = get_model(name)
            noise, labels = entry.draw(EVAL_SAMPLES, seed=EVAL_SEED, dtype=torch.float64)
            s = entry.schedule
            ends = torch.tensor([s.t_noise, s.t_data], dtype=torch.float64)
            target = ode_solve(entry.wrap(labels), noise, ends, rtol=EXACT_RTOL, atol=EXACT_ATOL)[-1]
            cache[name] = (entry, noise, labels, target)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def single_gaussian():
    """The :class:`SingleGaussian` factory (a fixture, so test files need not import conftest)."""
    return SingleGaussian
