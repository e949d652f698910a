"""SolverScheduler inside diffusers-style loops: same samples as solversearch's own runner, Euler/DDIM parity,
config round trips, errors.  CPU only, tiny models built from a config, nothing downloaded."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler,  # noqa: E402
                       FlowMatchEulerDiscreteScheduler, UNet2DModel)

from solversearch.conventions import DDPMDiscrete, RectifiedFlow, VPLinear  # noqa: E402
from solversearch.integrations.diffusers_models import DiTAdapter, UNet2DAdapter  # noqa: E402
from solversearch.integrations.diffusers_scheduler import SchedulerStateError, SolverScheduler  # noqa: E402
from solversearch.models import get_model  # noqa: E402
from solversearch.solvers import classic, io  # noqa: E402
from solversearch.solvers.presets import load_preset, preset_nfes  # noqa: E402
from solversearch.solvers.solver import make_solver, sample  # noqa: E402

NULL = 4  # the tiny UNet's "unconditional" class


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, num_class_embeds=5).eval().requires_grad_(False)


def unet_call(unet, labels, guidance=1.0):
    """The network call of a class-conditional pipeline, guidance applied by the pipeline (as DiTPipeline)."""
    def call(x, t):
        b = x.shape[0]
        if guidance == 1.0:
            return unet(x, t.expand(b), class_labels=labels).sample
        both = torch.cat([labels, torch.full_like(labels, NULL)])
        out = unet(torch.cat([x, x]), t.expand(2 * b), class_labels=both)
        cond, uncond = out.sample.chunk(2)
        return uncond + guidance * (cond - uncond)
    return call


def diffusers_loop(scheduler, noise, call, **set_kw):
    """A denoising loop as diffusers pipelines write it."""
    scheduler.set_timesteps(**set_kw)
    flow = isinstance(scheduler, FlowMatchEulerDiscreteScheduler)  # flow pipelines neither scale nor rescale
    x = noise if flow else noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = call(x if flow else scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x).prev_sample
    return x


# --- same samples as the native runner ------------------------------------------------------------------------

@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_flow_unet_matches_native_sample(unet, guidance):
    entry = UNet2DAdapter(unet, "flow").entry(null_label=NULL)
    noise, labels = entry.draw(4, seed=1)
    solver = load_preset("sit-xl-2-256", 6)
    with torch.no_grad():
        native = sample(solver, entry.wrap(labels, guidance), noise)
        sched = SolverScheduler.from_preset("sit-xl-2-256")
        x = diffusers_loop(sched, noise, unet_call(unet, labels, guidance), num_inference_steps=6)
    assert sched.timesteps[0] == 1000.0 and sched.sigmas[-1] == 0.0 and len(sched.sigmas) == 7
    assert (x - native).abs().max() <= 1e-5
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_vp_unet_ddpm_solver_matches_native_sample(unet, guidance):
    entry = UNet2DAdapter(unet, "epsilon").entry(schedule="ddpm", null_label=NULL)
    noise, labels = entry.draw(4, seed=2)
    solver = classic.build("dpm++3m", 6, DDPMDiscrete(), "uniform-lambda")  # a real multistep matrix
    sched = SolverScheduler.from_solvers([solver])
    with torch.no_grad():
        native = sample(solver, entry.wrap(labels, guidance), noise)
        x = diffusers_loop(sched, noise, unet_call(unet, labels, guidance), num_inference_steps=6)
    # ddpm solvers feed the fractional DDPM timestep N t - 1, starting at 999
    assert sched.timesteps[0] == 999.0
    expected = DDPMDiscrete().model_time(solver.time_tensor()[:-1]).float()
    assert torch.equal(sched.timesteps, expected)
    scale = native.abs().max()
    assert (x - native).abs().max() <= 1e-5 * max(1.0, float(scale))


def test_vp_unet_v_prediction_and_dit_preset_match_native_sample(unet):
    # v-prediction network on the continuous VP schedule (the schedule of the paper's DiT preset)
    entry = UNet2DAdapter(unet, "v_prediction").entry(schedule="vp-linear")
    noise, labels = entry.draw(3, seed=3)
    solver = load_preset("dit-xl-2-256", 7)
    sched = SolverScheduler.from_preset("dit-xl-2-256", prediction_type="v_prediction")
    with torch.no_grad():
        native = sample(solver, entry.wrap(labels), noise)
        x = diffusers_loop(sched, noise, unet_call(unet, labels), num_inference_steps=7)
    assert sched.timesteps[0] == pytest.approx(999.0)  # vp-linear solvers feed 1000 t
    assert (x - native).abs().max() <= 1e-5 * max(1.0, float(native.abs().max()))


@pytest.mark.parametrize("name,preset,prediction", [("gmm-rf", "sit-xl-2-256", "flow"),
                                                     ("gmm-vp", "dit-xl-2-256", "epsilon")])
def test_exact_gmm_matches_native_sample(name, preset, prediction):
    """The exact Gaussian-mixture models, every NFE of the preset."""
    entry = get_model(name)
    noise, labels = entry.draw(16, seed=0)
    sched = SolverScheduler.from_preset(preset)
    assert sched.config.prediction_type == prediction

    def call(x, t):
        if prediction == "flow":  # diffusers flow convention: output noise - data at sigma = t / 1000
            return -entry.net(x, (1 - t.double() / 1000).expand(x.shape[0]), class_labels=labels)
        return entry.net(x, t.expand(x.shape[0]), class_labels=labels)

    for nfe in preset_nfes(preset):
        native = sample(load_preset(preset, nfe), entry.wrap(labels), noise)
        x = diffusers_loop(sched, noise, call, num_inference_steps=nfe)
        assert (x - native).abs().max() <= 1e-5, nfe


def test_dit_pipeline_with_preset_matches_native_sample(tmp_path):
    """DiTPipeline's own loop (CFG on a doubled batch, learned-sigma split) with the paper's DiT preset."""
    from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), block_out_channels=(4,), layers_per_block=1,
                        latent_channels=2, norm_num_groups=2, sample_size=4).eval()
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=4, in_channels=2, out_channels=4,
                                num_layers=1, sample_size=4, patch_size=2, num_embeds_ada_norm=1000,
                                norm_num_groups=1).eval()
    pipe = DiTPipeline(transformer=dit, vae=vae, scheduler=SolverScheduler.from_preset("dit-xl-2-256"))
    pipe.set_progress_bar_config(disable=True)
    labels = [1, 2]
    images = pipe(class_labels=labels, num_inference_steps=6, guidance_scale=4.0,
                  generator=torch.Generator().manual_seed(0), output_type="pt").images

    entry = DiTAdapter(dit).entry(schedule="vp-linear")
    noise = torch.randn((2, 2, 4, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latents = sample(load_preset("dit-xl-2-256", 6), entry.wrap(torch.tensor(labels), 4.0), noise)
        native = (vae.decode(latents / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    assert (images - native).abs().max() <= 1e-5

    with pytest.raises(ValueError, match="holds NFE 5, 6, 7, 8, 9, 10"):
        pipe(class_labels=labels, num_inference_steps=4, output_type="pt")

    # a saved pipeline names the scheduler by its module and loads it back (local folder)
    pipe.save_pretrained(tmp_path)
    again = DiTPipeline.from_pretrained(tmp_path, local_files_only=True)
    assert isinstance(again.scheduler, SolverScheduler) and again.scheduler.nfes == [5, 6, 7, 8, 9, 10]
    again.set_progress_bar_config(disable=True)
    images2 = again(class_labels=labels, num_inference_steps=6, guidance_scale=4.0,
                    generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert (images2 - images).abs().max() <= 1e-5


# --- zero coefficients: the classic schedulers -----------------------------------------------------------------

def test_identity_matrix_uniform_grid_matches_flow_match_euler(unet):
    """M = identity on the uniform grid is Euler; FlowMatchEuler (shift 1) with Flux's sigmas linspace(1, 1/N, N)
    runs the same grid sigma = 1, (N-1)/N, ..., 1/N, 0."""
    n = 8
    solver = classic.build("euler", n, RectifiedFlow(), "uniform-t")
    assert solver.matrix().equal(torch.eye(n, dtype=torch.float64))
    noise = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2])
    call = unet_call(unet, labels)
    with torch.no_grad():
        ours = diffusers_loop(SolverScheduler.from_solvers([solver]), noise, call, num_inference_steps=n)
        euler = FlowMatchEulerDiscreteScheduler(shift=1.0)
        theirs = diffusers_loop(euler, noise, call, sigmas=np.linspace(1.0, 1 / n, n))
    assert torch.allclose(euler.sigmas.double(), 1 - solver.time_tensor(), atol=1e-7)
    assert (ours - theirs).abs().max() <= 1e-5


def test_identity_matrix_matches_ddim_trailing(unet):
    """DDIM (eta 0) is the first-order data-prediction step.  With timestep_spacing='trailing' DDIM visits the
    table entries 999, 899, ..., 99 and ends at alphas_cumprod[0] (set_alpha_to_one=False), i.e. the DDPM
    schedule's times t = (n + 1) / 1000 = 1.0, 0.9, ..., 0.1 and the data end 0.001: the identity-matrix solver on
    that grid feeds the same timesteps and applies the same update (up to DDIM's float32 alphas_cumprod)."""
    n = 10
    ddim = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing",
                         prediction_type="epsilon")
    times = [1.0 - 0.1 * k for k in range(n)] + [1e-3]
    solver = make_solver("linear", "data", times, DDPMDiscrete(), coeffs=np.eye(n), name="ddim-trailing")
    ours = SolverScheduler.from_solvers([solver])
    noise = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    call = unet_call(unet, torch.tensor([0, 1, 2]))
    with torch.no_grad():
        x_ours = diffusers_loop(ours, noise, call, num_inference_steps=n)
        x_ddim = diffusers_loop(ddim, noise, call, num_inference_steps=n)
    assert ours.timesteps.tolist() == ddim.timesteps.tolist()
    scale = float(x_ddim.abs().max())
    assert (x_ours - x_ddim).abs().max() <= 2e-5 * max(1.0, scale)


# --- config, swapping, errors, state -----------------------------------------------------------------------------

def test_save_pretrained_round_trip(tmp_path, unet):
    searched = classic.build("ab3", 5, RectifiedFlow(), "quadratic").replace(name="searched",
                                                                               meta={"prediction": "velocity"})
    sched = SolverScheduler.from_solvers([searched, load_preset("sit-xl-2-256", 6)])
    sched.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert data["_class_name"] == "SolverScheduler" and [s["nfe"] for s in data["solvers"]] == [5, 6]
    loaded = SolverScheduler.from_pretrained(tmp_path)
    assert loaded.nfes == [5, 6] and loaded.config.prediction_type == "flow"
    assert loaded.solver_for(5) == searched and loaded.solver_for(6) == load_preset("sit-xl-2-256", 6)
    again = SolverScheduler.from_config(loaded.config)
    assert again.config["solvers"] == sched.config["solvers"]
    noise = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    call = unet_call(unet, torch.tensor([0, 1]))
    with torch.no_grad():
        a = diffusers_loop(sched, noise, call, num_inference_steps=5)
        b = diffusers_loop(loaded, noise, call, num_inference_steps=5)
    assert torch.equal(a, b)


def test_from_config_swaps_in_for_other_schedulers():
    flow = SolverScheduler.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False).config)
    assert flow.config.prediction_type == "flow" and flow.config.preset == "sit-xl-2-256"
    assert flow.nfes == preset_nfes("sit-xl-2-256")
    flow.set_timesteps(sigmas=np.linspace(1.0, 0.2, 5), mu=1.1)  # Flux passes both: only the count is used
    assert flow.num_inference_steps == 5
    assert torch.allclose(flow.timesteps.double(), 1000 * (1 - load_preset("sit-xl-2-256", 5).time_tensor()[:-1]))
    dcn = SolverScheduler.from_config(FlowMatchEulerDiscreteScheduler().config, preset="flowdcn-b-2-256")
    assert dcn.solver_for(6).meta["preset"] == "flowdcn-b-2-256"

    vp = SolverScheduler.from_config(DDIMScheduler(beta_schedule="linear").config)
    assert vp.config.prediction_type == "epsilon" and vp.config.preset == "dit-xl-2-256"
    v = SolverScheduler.from_config(DPMSolverMultistepScheduler(prediction_type="v_prediction").config)
    assert v.config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="beta_schedule='scaled_linear'"):
        SolverScheduler.from_config(DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                  beta_end=0.012).config)
    # and back: a diffusers scheduler built from ours keeps working
    FlowMatchEulerDiscreteScheduler.from_config(flow.config).set_timesteps(4)


def test_signature_accepts_custom_sigmas_and_timesteps():
    """diffusers' retrieve_timesteps inspects set_timesteps for these names before passing them."""
    params = inspect.signature(SolverScheduler.set_timesteps).parameters
    assert {"num_inference_steps", "device", "sigmas", "timesteps", "mu"} <= set(params)
    sched = SolverScheduler.from_preset("sit-xl-2-256", nfe=[6, 8])
    sched.set_timesteps(timesteps=[1000.0, 800, 600, 400, 200, 100])
    assert sched.num_inference_steps == 6 and sched.solver.nfe == 6
    with pytest.raises(ValueError, match="conflicting"):
        sched.set_timesteps(8, sigmas=[1.0, 0.5])


def test_unknown_nfe_is_a_clear_error():
    sched = SolverScheduler.from_preset("dit-xl-2-256", nfe=[6, 8])
    with pytest.raises(ValueError, match=r"no solver for 7 steps.*holds NFE 6, 8"):
        sched.set_timesteps(7)
    with pytest.raises(ValueError, match="unknown preset"):
        SolverScheduler(preset="nope")
    with pytest.raises(ValueError, match="kind 'heun'"):
        SolverScheduler.from_solvers([classic.build("heun", 5, RectifiedFlow())])
    with pytest.raises(ValueError, match="two solvers for NFE 6"):
        SolverScheduler.from_solvers([load_preset("sit-xl-2-256", 6), load_preset("flowdcn-b-2-256", 6)])
    with pytest.raises(ValueError, match="does not fit rectified-flow"):
        SolverScheduler.from_preset("sit-xl-2-256", prediction_type="epsilon")
    bad = io.to_dict(load_preset("sit-xl-2-256", 6))
    bad["coefficients"][2] = [1.0, 1.0, 1.0]
    with pytest.raises(io.SolverFileError, match=r"solvers\[0\].*coefficients\[2\]"):
        SolverScheduler(solvers=[bad])


def test_step_before_set_timesteps_and_out_of_order():
    sched = SolverScheduler.from_preset("sit-xl-2-256", nfe=5)
    x = torch.randn(1, 4)
    with pytest.raises(SchedulerStateError, match="before set_timesteps"):
        sched.step(x, 1000.0, x)
    sched.set_timesteps(5)
    with pytest.raises(SchedulerStateError, match="step 0 of this 5-step run"):
        sched.step(x, sched.timesteps[2], x)
    for t in sched.timesteps:
        x = sched.step(torch.zeros_like(x), t, x).prev_sample
    with pytest.raises(SchedulerStateError, match="all 5 steps"):
        sched.step(x, sched.timesteps[-1], x)
    with pytest.raises(NotImplementedError, match="image-to-image"):
        sched.set_begin_index(2)


def test_set_timesteps_resets_state(unet):
    sched = SolverScheduler.from_preset("sit-xl-2-256", nfe=[6, 8])
    noise = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    call = unet_call(unet, torch.tensor([3, 1]))
    with torch.no_grad():
        first = diffusers_loop(sched, noise, call, num_inference_steps=6)
        # an interrupted run at another NFE leaves stored predictions behind ...
        sched.set_timesteps(8)
        x = noise
        for t in sched.timesteps[:3]:
            x = sched.step(call(x, t), t, x).prev_sample
        # ... which the next set_timesteps drops: the same run gives the same samples
        second = diffusers_loop(sched, noise, call, num_inference_steps=6)
        third = diffusers_loop(sched, noise, call, num_inference_steps=6)
    assert torch.equal(first, second) and torch.equal(second, third)


def test_low_precision_samples_keep_their_dtype():
    sched = SolverScheduler.from_preset("sit-xl-2-256", nfe=5)
    sched.set_timesteps(5)
    x = torch.randn(2, 3, dtype=torch.bfloat16)
    out = sched.step(torch.randn(2, 3, dtype=torch.bfloat16), sched.timesteps[0], x, return_dict=False)
    assert isinstance(out, tuple) and out[0].dtype == torch.bfloat16


def test_vp_schedule_check_and_override():
    ddpm_solver = classic.build("ddim", 6, DDPMDiscrete(beta_start=1e-4, beta_end=0.02))
    with pytest.raises(ValueError, match="linear betas 0.00085..0.012"):
        SolverScheduler.from_solvers([ddpm_solver], beta_start=0.00085, beta_end=0.012)
    sched = SolverScheduler.from_solvers([ddpm_solver], beta_start=0.00085, beta_end=0.012, check_schedule=False)
    assert sched.nfes == [6]
    vp = classic.build("dpm++2m", 6, VPLinear(), "uniform-lambda").replace(meta={"prediction": "v"})
    assert SolverScheduler.from_solvers([vp]).config.prediction_type == "v_prediction"
