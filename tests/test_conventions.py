"""Schedules and time conventions: every conversion round-trips, derivatives match finite differences, and the
discrete DDPM table is the textbook one."""

import json
import math

import numpy as np
import pytest
import torch

from solversearch.conventions import (DDPMDiscrete, RectifiedFlow, VPLinear, ddpm_timestep_from_t,
                                      flow_sigma_from_t, get_schedule, interp, is_flow, schedule_config,
                                      sigma_ratio, t_from_ddpm_timestep, t_from_flow_sigma, t_of_sigma_ratio)

F64 = torch.float64
SCHEDULES = {"rf": RectifiedFlow(), "vp-linear": VPLinear(), "ddpm": DDPMDiscrete()}


def interior(schedule, n=2001, margin=1e-4):
    lo, hi = sorted((schedule.t_noise, schedule.t_data))
    return torch.linspace(lo + margin, hi - margin, n, dtype=F64)


# --- edge conversions ----------------------------------------------------------------------------------------

def test_flow_sigma_round_trip_and_meaning():
    t = torch.linspace(0, 1, 1001, dtype=F64)
    assert torch.allclose(t_from_flow_sigma(flow_sigma_from_t(t)), t, rtol=0, atol=1e-15)
    s = torch.linspace(0, 1, 1001, dtype=F64)
    assert torch.allclose(flow_sigma_from_t(t_from_flow_sigma(s)), s, rtol=0, atol=1e-15)
    # diffusers' flow sigma is the rectified-flow noise coefficient: 1 at the noise end (t=0), 0 at data (t=1)
    rf = RectifiedFlow()
    assert torch.allclose(flow_sigma_from_t(t), rf.sigma(t), rtol=0, atol=0)
    assert float(flow_sigma_from_t(0.0)) == 1.0 and float(flow_sigma_from_t(1.0)) == 0.0


@pytest.mark.parametrize("N", [1000, 500])
def test_ddpm_timestep_round_trip(N):
    steps = torch.arange(N, dtype=F64)
    assert torch.allclose(ddpm_timestep_from_t(t_from_ddpm_timestep(steps, N), N), steps, rtol=0, atol=1e-9)
    t = torch.linspace(1.0 / N, 1.0, 777, dtype=F64)
    assert torch.allclose(t_from_ddpm_timestep(ddpm_timestep_from_t(t, N), N), t, rtol=0, atol=1e-15)
    # the ends of the continuous range are the first and last table entries
    assert float(ddpm_timestep_from_t(1.0, N)) == N - 1
    assert abs(float(ddpm_timestep_from_t(1.0 / N, N))) < 1e-12
    # the DDPM schedule feeds its network exactly this timestep
    sched = DDPMDiscrete(num_train_timesteps=N)
    assert torch.allclose(sched.model_time(t), ddpm_timestep_from_t(t, N), rtol=0, atol=1e-12)


@pytest.mark.parametrize("schedule", [RectifiedFlow(), RectifiedFlow(time_scale=1000.0), VPLinear(),
                                      VPLinear(beta_min=0.05, beta_max=15.0, time_scale=1.0), DDPMDiscrete(),
                                      DDPMDiscrete(beta_start=2e-4, beta_end=0.03, num_train_timesteps=500)],
                         ids=repr)
def test_schedule_config_rebuilds_an_equal_schedule(schedule):
    config = schedule_config(schedule)
    config = json.loads(json.dumps(config))  # what a solver file stores
    rebuilt = get_schedule(**config)
    assert rebuilt == schedule
    assert type(rebuilt) is type(schedule)
    t = interior(schedule, 50)
    assert torch.equal(rebuilt.alpha(t), schedule.alpha(t))
    assert torch.equal(rebuilt.sigma(t), schedule.sigma(t))
    assert torch.equal(rebuilt.model_time(t), schedule.model_time(t))


def test_schedule_configs_differ_when_parameters_differ():
    assert get_schedule(**schedule_config(VPLinear(beta_max=15.0))) != VPLinear()
    assert get_schedule(**schedule_config(DDPMDiscrete(num_train_timesteps=500))) != DDPMDiscrete()
    assert get_schedule(**schedule_config(RectifiedFlow(time_scale=1000.0))) != RectifiedFlow()


def test_unknown_schedule_name_and_type():
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        get_schedule("cosine")
    with pytest.raises(TypeError):
        schedule_config(object())


def test_is_flow():
    assert is_flow(RectifiedFlow()) and not is_flow(VPLinear()) and not is_flow(DDPMDiscrete())


@pytest.mark.parametrize("name", ["vp-linear", "ddpm"])
def test_sigma_ratio_round_trip(name):
    sched = SCHEDULES[name]
    t = sched.t_table if name == "ddpm" else interior(sched, 500, margin=0.0)
    r = sigma_ratio(sched, t)
    assert torch.allclose(t_of_sigma_ratio(sched, r), t, rtol=1e-9, atol=1e-12)


def test_interp_matches_numpy():
    g = torch.Generator().manual_seed(0)
    xp = torch.sort(torch.rand(30, generator=g, dtype=F64)).values
    fp = torch.randn(30, generator=g, dtype=F64)
    x = xp[0] + (xp[-1] - xp[0]) * torch.rand(200, generator=g, dtype=F64)
    assert np.allclose(interp(x, xp, fp).numpy(), np.interp(x.numpy(), xp.numpy(), fp.numpy()), rtol=0,
                       atol=1e-13)


# --- log-SNR and its inverse -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["rf", "vp-linear"])
def test_t_of_lam_inverts_lam_over_the_range(name):
    sched = SCHEDULES[name]
    lo, hi = sorted((sched.t_noise, sched.t_data))
    t = torch.linspace(lo, hi, 20001, dtype=F64)
    if name == "rf":
        t = t[1:-1]  # lambda is -inf / +inf at the ends
    back = sched.t_of_lam(sched.lam(t))
    assert torch.allclose(back, t, rtol=1e-12, atol=1e-13), float((back - t).abs().max())


def test_rf_lam_infinite_ends_map_back():
    rf = RectifiedFlow()
    assert float(rf.lam(torch.tensor(0.0))) == -math.inf and float(rf.lam(torch.tensor(1.0))) == math.inf
    assert float(rf.t_of_lam(torch.tensor(-math.inf))) == 0.0 and float(rf.t_of_lam(torch.tensor(math.inf))) == 1.0


def test_ddpm_t_of_lam_inverts_lam_on_the_table():
    sched = DDPMDiscrete()
    back = sched.t_of_lam(sched.lam(sched.t_table))
    assert torch.allclose(back, sched.t_table, rtol=1e-12, atol=1e-13)


def test_ddpm_t_of_lam_inverts_lam_between_table_entries():
    sched = DDPMDiscrete()
    t = interior(sched, 20001, margin=0.0)
    back = sched.t_of_lam(sched.lam(t))
    assert torch.allclose(back, t, rtol=1e-9, atol=1e-12), float((back - t).abs().max())


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_lam_increases_from_noise_to_data(name):
    sched = SCHEDULES[name]
    t = torch.linspace(sched.t_noise, sched.t_data, 3001, dtype=F64)[1:-1]
    lam = sched.lam(t)
    assert bool((lam[1:] > lam[:-1]).all())


# --- derivatives and normalisation -------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SCHEDULES))
def test_derivatives_match_finite_differences(name):
    sched = SCHEDULES[name]
    if name == "ddpm":
        # log alpha is piecewise linear: take points inside table intervals, steps that stay inside them
        t = (sched.t_table[:-1] + sched.t_table[1:]) / 2
        h = 1e-7
    else:
        t = interior(sched, 401, margin=1e-3)
        h = 1e-6
    fd_a = (sched.alpha(t + h) - sched.alpha(t - h)) / (2 * h)
    fd_s = (sched.sigma(t + h) - sched.sigma(t - h)) / (2 * h)
    scale = 1.0 + fd_s.abs()
    assert torch.allclose(sched.d_alpha(t), fd_a, rtol=1e-6, atol=1e-8)
    assert bool(((sched.d_sigma(t) - fd_s).abs() <= 1e-6 * scale).all())


def test_vp_linear_log_alpha_solves_the_sde_mean_equation():
    """d log alpha / dt = -beta(t) / 2 with beta linear 0.1 -> 20, and log alpha(1) = -(0.1 + 20) / 4."""
    vp = VPLinear()
    t = torch.linspace(0.0, 1.0, 101, dtype=F64)
    beta = 0.1 + t * (20.0 - 0.1)
    assert torch.allclose(vp.d_alpha(t) / vp.alpha(t), -0.5 * beta, rtol=1e-12, atol=0)
    assert math.isclose(float(torch.log(vp.alpha(1.0))), -(0.1 + 20.0) / 4, rel_tol=1e-12)
    assert float(vp.alpha(0.0)) == 1.0 and float(vp.sigma(0.0)) == 0.0


@pytest.mark.parametrize("name", ["vp-linear", "ddpm"])
def test_vp_schedules_preserve_variance(name):
    sched = SCHEDULES[name]
    t = interior(sched, 2001, margin=0.0)
    assert torch.allclose(sched.alpha(t) ** 2 + sched.sigma(t) ** 2, torch.ones_like(t), rtol=0, atol=1e-14)


def test_rf_is_the_straight_line():
    rf = RectifiedFlow()
    t = torch.linspace(0, 1, 11, dtype=F64)
    assert torch.equal(rf.alpha(t), t) and torch.allclose(rf.sigma(t), 1 - t, rtol=0, atol=0)
    assert rf.t_noise == 0.0 and rf.t_data == 1.0
    assert float(rf.sigma(rf.t_noise)) == 1.0 and float(rf.sigma(rf.t_data)) == 0.0


# --- the discrete DDPM table --------------------------------------------------------------------------------

def test_ddpm_table_is_the_cumulative_product_of_linear_betas():
    sched = DDPMDiscrete()
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    acp = np.cumprod(1.0 - betas)
    assert np.allclose(sched.alphas_cumprod().numpy(), acp, rtol=1e-12, atol=0)
    t = (torch.arange(1000, dtype=F64) + 1) / 1000  # entry n sits at t = (n + 1) / 1000
    assert np.allclose((sched.alpha(t) ** 2).numpy(), acp, rtol=1e-12, atol=0)
    assert np.allclose((sched.sigma(t) ** 2).numpy(), 1 - acp, rtol=1e-10, atol=0)
    assert sched.t_noise == 1.0 and sched.t_data == 1e-3


def test_ddpm_model_time_gives_the_integer_timesteps():
    sched = DDPMDiscrete()
    n = torch.arange(1000, dtype=F64)
    mt = sched.model_time((n + 1) / 1000)
    assert torch.allclose(mt, n, rtol=0, atol=1e-9)
    assert torch.equal(torch.round(mt), n)
    assert float(sched.model_time(sched.t_noise)) == 999.0


def test_ddpm_log_alpha_is_linear_between_entries():
    sched = DDPMDiscrete()
    t0, t1 = 0.25, 0.251  # entries 249 and 250
    la = torch.log(sched.alpha(torch.tensor([t0, (t0 + t1) / 2, t1], dtype=F64)))
    assert math.isclose(float(la[1]), float(la[0] + la[2]) / 2, rel_tol=1e-12)


@pytest.mark.parametrize("schedule, expected", [(RectifiedFlow(), 1.0), (RectifiedFlow(time_scale=1000.0), 1000.0),
                                                (VPLinear(), 1000.0)], ids=["rf", "rf-1000", "vp"])
def test_model_time_scales(schedule, expected):
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    assert torch.allclose(schedule.model_time(t), expected * t, rtol=1e-15, atol=0)
