"""The model wrapper: prediction-type algebra, classifier-free guidance, and what it refuses."""

import pytest
import torch

from solversearch.conventions import DDPMDiscrete, RectifiedFlow, VPLinear
from solversearch.models import ModelEntry, get_model
from solversearch.models.wrapper import (PREDICTION_TYPES, ModelError, WrappedModel, canonical_prediction,
                                         from_x0_eps, to_x0_eps)
from solversearch.solvers import classic
from solversearch.solvers.solver import sample

F64 = torch.float64
SCHEDULES = [RectifiedFlow(), VPLinear(), DDPMDiscrete()]


def interior_times(schedule):
    lo, hi = sorted((schedule.t_noise, schedule.t_data))
    return [lo + f * (hi - lo) for f in (0.05, 0.3, 0.5, 0.77, 0.95)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_to_x0_eps_inverts_from_x0_eps(schedule, prediction):
    g = torch.Generator().manual_seed(1)
    for t in interior_times(schedule):
        x0 = torch.randn(8, 5, generator=g, dtype=F64)
        eps = torch.randn(8, 5, generator=g, dtype=F64)
        tt = torch.tensor(t, dtype=F64)
        x = schedule.alpha(tt) * x0 + schedule.sigma(tt) * eps
        pred = from_x0_eps(x0, eps, tt, schedule, prediction)
        x0_back, eps_back = to_x0_eps(pred, x, tt, schedule, prediction)
        assert torch.allclose(x0_back, x0, rtol=1e-9, atol=1e-9), (t, prediction)
        assert torch.allclose(eps_back, eps, rtol=1e-9, atol=1e-9), (t, prediction)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
def test_prediction_types_mean_what_they_say(schedule):
    """Independent definitions: velocity = d/dt of the path at fixed (x0, eps); v = alpha eps - sigma x0."""
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64)
    for t in interior_times(schedule):
        tt = torch.tensor(t, dtype=F64)
        a, s = schedule.alpha(tt), schedule.sigma(tt)
        assert torch.equal(from_x0_eps(x0, eps, tt, schedule, "epsilon"), eps)
        assert torch.equal(from_x0_eps(x0, eps, tt, schedule, "x0"), x0)
        assert torch.allclose(from_x0_eps(x0, eps, tt, schedule, "v"), a * eps - s * x0, rtol=1e-14, atol=1e-14)
        h = 1e-7 if schedule.name == "ddpm" else 1e-6
        if schedule.name == "ddpm":  # stay inside one table interval (log alpha is piecewise linear)
            tt = torch.tensor(round(t * 1000) / 1000 + 5e-4, dtype=F64)
        path = lambda u: schedule.alpha(u) * x0 + schedule.sigma(u) * eps  # noqa: E731
        fd = (path(tt + h) - path(tt - h)) / (2 * h)
        vel = from_x0_eps(x0, eps, tt, schedule, "velocity")
        assert torch.allclose(vel, fd, rtol=1e-6, atol=1e-6)
    if schedule.name == "rf":
        assert torch.allclose(from_x0_eps(x0, eps, 0.3, schedule, "velocity"), x0 - eps, rtol=0, atol=1e-15)


def test_prediction_aliases():
    assert canonical_prediction("sample") == "x0"
    assert canonical_prediction("eps") == "epsilon"
    assert canonical_prediction("flow") == "velocity"
    for p in PREDICTION_TYPES:
        assert canonical_prediction(p) == p


def test_unknown_prediction_type_raises_value_error():
    net = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="unknown prediction type 'score'"):
        WrappedModel(net, VPLinear(), "score")
    with pytest.raises(ValueError, match="unknown prediction type"):
        ModelEntry("m", net, VPLinear(), "score", (2,))
    x = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="unknown prediction type"):
        to_x0_eps(x, x, 0.5, VPLinear(), "score")
    with pytest.raises(ValueError, match="unknown prediction type"):
        from_x0_eps(x, x, 0.5, VPLinear(), "score")


# --- classifier-free guidance ------------------------------------------------------------------------------

class LinearNet:
    """``out = W[label] * x + b[label] * t`` with a log of every call's batch size and time input."""

    def __init__(self, num_labels=4, dim=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(num_labels, dim, generator=g, dtype=F64)
        self.b = torch.randn(num_labels, dim, generator=g, dtype=F64)
        self.batches, self.times = [], []

    def __call__(self, x, t, class_labels):
        self.batches.append(x.shape[0])
        self.times.append(t.clone())
        return self.W[class_labels] * x + self.b[class_labels] * t[:, None]


@pytest.mark.parametrize("w", [0.0, 1.5, 4.0])
def test_guided_prediction_is_uncond_plus_w_times_difference(w):
    net = LinearNet()
    sched = VPLinear()
    x = torch.randn(5, 3, dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1])
    null = torch.full_like(y, 3)
    model = WrappedModel(net, sched, "epsilon", cond={"class_labels": y}, uncond={"class_labels": null},
                         guidance=w)
    t = torch.tensor(0.4, dtype=F64)
    x0, eps = model(x, t)
    assert net.batches == [10]  # conditional and unconditional halves in one call
    t_in = torch.full((5,), 400.0, dtype=F64)
    cond = net.W[y] * x + net.b[y] * t_in[:, None]
    uncond = net.W[null] * x + net.b[null] * t_in[:, None]
    want_eps = uncond + w * (cond - uncond)
    assert torch.allclose(eps, want_eps, rtol=1e-13, atol=1e-13)
    a, s = sched.alpha(t), sched.sigma(t)
    assert torch.allclose(x0, (x - s * want_eps) / a, rtol=1e-12, atol=1e-12)
    assert model.calls == 1


def test_guidance_one_calls_the_net_once_on_the_batch():
    net = LinearNet()
    entry = ModelEntry("toy", net, RectifiedFlow(), "velocity", (3,), num_classes=3, null_label=3)
    y = torch.tensor([0, 1, 2, 2])
    model = entry.wrap(y, guidance=1.0)
    x = torch.randn(4, 3, dtype=F64)
    x0, eps = model(x, 0.25)
    assert net.batches == [4]
    v = net.W[y] * x + net.b[y] * 0.25
    assert torch.allclose(x0 - eps, v, rtol=1e-13, atol=1e-13)  # rectified flow: velocity = x0 - eps
    # a whole solve at NFE 6: six calls, each on the batch itself
    net.batches.clear()
    model = entry.wrap(y, guidance=1.0)
    sample(classic.build("euler", 6, entry.schedule), model, x)
    assert net.batches == [4] * 6 and model.calls == 6
    # with guidance the same solve makes six calls on doubled batches and still counts six evaluations
    net.batches.clear()
    model = entry.wrap(y, guidance=2.0)
    sample(classic.build("euler", 6, entry.schedule), model, x)
    assert net.batches == [8] * 6 and model.calls == 6


def test_guidance_on_the_gmm_moves_samples_towards_the_class():
    """The wrapped exact model with w=1 is the conditional posterior, and w=0 the unconditional one."""
    entry = get_model("gmm2d-vp")
    x = torch.randn(6, 2, dtype=F64)
    y = torch.arange(6) % 10
    t = torch.tensor(0.5, dtype=F64)
    cond = entry.net.posterior(x, t.expand(6), y)[1]
    uncond = entry.net.posterior(x, t.expand(6), torch.full_like(y, 10))[1]
    assert not torch.allclose(cond, uncond, atol=1e-3)
    assert torch.allclose(entry.wrap(y, guidance=1.0)(x, t)[1], cond, rtol=1e-10, atol=1e-12)
    assert torch.allclose(entry.wrap(y, guidance=0.0)(x, t)[1], uncond, rtol=1e-10, atol=1e-12)
    assert torch.allclose(entry.wrap(y, guidance=3.0)(x, t)[1], uncond + 3.0 * (cond - uncond), rtol=1e-9,
                          atol=1e-10)


def test_guidance_needs_unconditional_inputs():
    net = LinearNet()
    with pytest.raises(ValueError, match="uncond"):
        WrappedModel(net, VPLinear(), "epsilon", cond={"class_labels": torch.tensor([0])}, guidance=2.0)
    entry = ModelEntry("toy", net, VPLinear(), "epsilon", (3,), num_classes=3, null_label=3)
    with pytest.raises(ValueError, match="guidance needs class labels"):
        entry.wrap(None, guidance=2.0)


@pytest.mark.parametrize("schedule, expected", [(RectifiedFlow(), 0.3), (VPLinear(), 300.0),
                                                (DDPMDiscrete(), 299.0)], ids=["rf", "vp", "ddpm"])
def test_net_receives_its_own_time_convention(schedule, expected):
    net = LinearNet()
    model = WrappedModel(net, schedule, "epsilon", cond={"class_labels": torch.tensor([0, 1])})
    model(torch.zeros(2, 3, dtype=F64), torch.tensor(0.3, dtype=F64))
    assert torch.allclose(net.times[0], torch.full((2,), expected, dtype=F64), rtol=1e-12, atol=1e-12)


# --- what the wrapper refuses --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, match", [
    (lambda x: x[:, :-1], r"shape \(4, 2\) for input \(4, 3\)"),
    (lambda x: x.to(torch.float32), "dtype torch.float32 for input torch.float64"),
    (lambda x: x * float("nan"), "non-finite"),
    (lambda x: torch.where(x > 0, torch.full_like(x, float("inf")), x), "non-finite"),
    (lambda x: x.tolist(), "expected a tensor"),
], ids=["shape", "dtype", "nan", "inf", "not-a-tensor"])
def test_model_error_for_unusable_output(bad, match):
    model = WrappedModel(lambda x, t: bad(x), VPLinear(), "epsilon")
    x = torch.randn(4, 3, dtype=F64).abs() + 0.1
    with pytest.raises(ModelError, match=match):
        model(x, 0.5)
    # inside a solve the error also names the step
    with pytest.raises(ModelError, match=r"^step 0: "):
        sample(classic.build("ddim", 3, VPLinear()), WrappedModel(lambda x, t: bad(x), VPLinear(), "epsilon"), x)


def test_check_false_skips_validation():
    model = WrappedModel(lambda x, t: x.to(torch.float32), VPLinear(), "epsilon", check=False)
    x0, eps = model(torch.ones(2, 3, dtype=F64), 0.5)
    assert eps.dtype == torch.float32
