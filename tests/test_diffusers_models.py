"""Adapters from diffusers networks to solversearch entries: a 2-step search on a tiny random model of each class,
and the found solver played through SolverScheduler in a pipeline-style loop gives the native samples.
CPU only, models built from a config, nothing downloaded."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import (DDIMScheduler, DiTTransformer2DModel, FluxTransformer2DModel,  # noqa: E402
                       SD3Transformer2DModel, UNet2DModel)

from solversearch.integrations import diffusers_models as dm  # noqa: E402
from solversearch.integrations.diffusers_scheduler import SolverScheduler  # noqa: E402
from solversearch.search.search import SearchConfig, search  # noqa: E402
from solversearch.solvers import io  # noqa: E402
from solversearch.solvers.solver import sample  # noqa: E402

SEARCH = dict(nfe=2, samples=8, val_samples=4, batch_size=4, epochs=1, init="zero")


# --- tiny models -------------------------------------------------------------------------------------------------

def tiny_unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, num_class_embeds=5).eval().requires_grad_(False)


def tiny_dit():
    torch.manual_seed(1)
    return DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=4, in_channels=2, out_channels=4,
                                 num_layers=1, sample_size=4, patch_size=2, num_embeds_ada_norm=6,
                                 norm_num_groups=1).eval().requires_grad_(False)


def tiny_sd3():
    torch.manual_seed(2)
    return SD3Transformer2DModel(sample_size=4, patch_size=2, in_channels=2, num_layers=1, attention_head_dim=4,
                                 num_attention_heads=2, joint_attention_dim=8, caption_projection_dim=8,
                                 pooled_projection_dim=8, out_channels=2,
                                 pos_embed_max_size=8).eval().requires_grad_(False)


def tiny_flux():
    torch.manual_seed(3)
    return FluxTransformer2DModel(patch_size=1, in_channels=8, num_layers=1, num_single_layers=1,
                                  attention_head_dim=8, num_attention_heads=2, joint_attention_dim=8,
                                  pooled_projection_dim=8, guidance_embeds=True,
                                  axes_dims_rope=(2, 2, 4)).eval().requires_grad_(False)


def prompts(n=2, length=3, dim=8, pooled=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, length, dim, generator=g), torch.randn(n, pooled, generator=g),
            torch.randn(1, length, dim, generator=g), torch.randn(1, pooled, generator=g))


# --- helpers -----------------------------------------------------------------------------------------------------

def run_search(entry, guidance=1.0):
    flow = entry.schedule.name == "rf"
    cfg = SearchConfig(**SEARCH, guidance=guidance, reference="ab4:16" if flow else "dpm++3m:16")
    result = search(entry, cfg, progress=False, log=lambda m: None)
    solver = result.solver
    assert solver.kind == "linear" and solver.nfe == 2 and solver.steps == 2
    assert all(math.isfinite(t) for t in solver.times)
    assert all(math.isfinite(c) for row in solver.coeffs for c in row)
    io.from_dict(io.to_dict(solver))  # a valid solver file: monotone grid, rows sum to 1, right ends
    assert solver.meta["model"] == entry.name
    return solver


def pipeline_loop(solver, noise, call):
    """The denoising loop of a diffusers pipeline, with the searched solver as its scheduler."""
    sched = SolverScheduler.from_solvers([solver])
    sched.set_timesteps(solver.nfe)
    x = noise
    for t in sched.timesteps:
        x = sched.step(call(x, t), t, x, return_dict=False)[0]
    return x


def assert_same(x, native):
    assert torch.isfinite(x).all()
    assert (x - native).abs().max() <= 1e-5 * max(1.0, float(native.abs().max()))


# --- one test per model class --------------------------------------------------------------------------------

def test_unet2d_search_and_scheduler():
    unet = tiny_unet()
    entry = dm.UNet2DAdapter(unet, "epsilon").entry(schedule="ddpm")
    assert entry.shape == (2, 8, 8) and entry.num_classes == 5 and entry.schedule.name == "ddpm"
    assert entry.prediction == "epsilon" and entry.time_fn is None  # ddpm timesteps are the schedule's own
    solver = run_search(entry)
    assert solver.schedule["name"] == "ddpm" and solver.form == "data"

    noise, labels = entry.draw(3, seed=7)
    with torch.no_grad():
        native = sample(solver, entry.wrap(labels), noise)
        x = pipeline_loop(solver, noise, lambda x, t: unet(x, t.expand(x.shape[0]), class_labels=labels).sample)
    assert_same(x, native)


def test_unet2d_flow_prediction_time_and_sign():
    unet = tiny_unet()
    entry = dm.UNet2DAdapter(unet, "flow").entry()
    assert entry.schedule.name == "rf" and entry.prediction == "velocity"
    x = torch.randn(2, 2, 8, 8)
    labels = torch.tensor([0, 1])
    t = torch.tensor(0.25, dtype=torch.float64)
    with torch.no_grad():
        raw = unet(x, torch.full((2,), 750.0), class_labels=labels).sample  # sigma = 1 - t = 0.75
        assert torch.equal(entry.wrap(labels).raw(x, t), -raw)


def test_dit_search_and_scheduler_with_guidance():
    dit = tiny_dit()
    entry = dm.DiTAdapter(dit).entry()
    assert entry.num_classes == 6 and entry.null_label == 6 and entry.shape == (2, 4, 4)
    noise, labels = entry.draw(2, seed=1)
    with torch.no_grad():  # learned sigma: 2C output channels, the adapter keeps the first C
        assert entry.net(noise, torch.full((2,), 10.0), class_labels=labels).shape == noise.shape
    solver = run_search(entry, guidance=1.5)

    def dit_pipeline_call(x, t, g=1.5):  # as DiTPipeline: doubled batch, CFG on the eps channels, split
        c = x.shape[1]
        out = dit(torch.cat([x, x]), timestep=t.expand(2 * x.shape[0]),
                  class_labels=torch.cat([labels, torch.full_like(labels, 6)])).sample
        cond, uncond = out[:, :c].chunk(2)
        return uncond + g * (cond - uncond)

    with torch.no_grad():
        native = sample(solver, entry.wrap(labels, 1.5), noise)
        x = pipeline_loop(solver, noise, dit_pipeline_call)
    assert_same(x, native)


def test_sd3_search_and_scheduler_with_cfg():
    sd3 = tiny_sd3()
    pe, pooled, neg, neg_pooled = prompts()
    entry = dm.SD3Adapter(sd3, pe, pooled, neg, neg_pooled).entry()
    assert entry.shape == (2, 4, 4) and entry.num_classes == 2 and entry.null_label == 2
    assert entry.label_key == "prompt" and entry.prediction == "velocity"
    solver = run_search(entry, guidance=2.0)
    assert solver.form == "velocity" and solver.times[0] == 0.0 and solver.times[-1] == 1.0

    noise, labels = entry.draw(2, seed=4)

    def sd3_pipeline_call(x, t, g=2.0):  # as StableDiffusion3Pipeline: [uncond, text] batch, then CFG
        ehs = torch.cat([neg.expand(len(labels), -1, -1), pe[labels]])
        pool = torch.cat([neg_pooled.expand(len(labels), -1), pooled[labels]])
        out = sd3(hidden_states=torch.cat([x, x]), timestep=t.expand(2 * x.shape[0]), encoder_hidden_states=ehs,
                  pooled_projections=pool).sample
        uncond, text = out.chunk(2)
        return uncond + g * (text - uncond)

    with torch.no_grad():
        native = sample(solver, entry.wrap(labels, 2.0), noise)
        x = pipeline_loop(solver, noise, sd3_pipeline_call)
    assert_same(x, native)

    # the prompts are part of the network: other prompts, another reference-cache key
    from solversearch.search.cache import model_fingerprint
    other = dm.SD3Adapter(sd3, pe + 1, pooled, neg, neg_pooled).entry()
    assert model_fingerprint(other) != model_fingerprint(entry)


def test_flux_search_and_scheduler_packed_latents():
    flux = tiny_flux()
    pe, pooled, _, _ = prompts()
    adapter = dm.FluxAdapter(flux, pe, pooled, latent_size=(4, 4), guidance_scale=3.5)
    entry = adapter.entry()
    assert entry.shape == (4, 8)  # (4/2)*(4/2) tokens of 4 * 2 channels
    assert entry.null_label is None  # no negative prompt: embedded guidance only
    solver = run_search(entry)

    noise, labels = entry.draw(3, seed=5)
    img_ids = dm.latent_image_ids(2, 2)
    txt_ids = torch.zeros(pe.shape[1], 3)

    def flux_pipeline_call(x, t):  # as FluxPipeline: timestep / 1000, embedded guidance, ids
        b = x.shape[0]
        return flux(hidden_states=x, timestep=t.expand(b).to(x.dtype) / 1000,
                    guidance=torch.full([1], 3.5, dtype=torch.float32).expand(b),
                    pooled_projections=pooled[labels], encoder_hidden_states=pe[labels], txt_ids=txt_ids,
                    img_ids=img_ids).sample

    with torch.no_grad():
        native = sample(solver, entry.wrap(labels), noise)
        x = pipeline_loop(solver, noise, flux_pipeline_call)
    assert_same(x, native)


# --- helpers and loading -----------------------------------------------------------------------------------------

def test_flux_pack_unpack_and_ids():
    lat = torch.randn(2, 3, 6, 4)
    packed = dm.pack_latents(lat)
    assert packed.shape == (2, 6, 12)
    assert torch.equal(dm.unpack_latents(packed, (6, 4)), lat)
    ids = dm.latent_image_ids(3, 2)
    assert ids.tolist() == [[0, r, c] for r in range(3) for c in range(2)]
    with pytest.raises(ValueError, match="even"):
        dm.FluxAdapter(tiny_flux(), *prompts()[:2], latent_size=(5, 4))


def test_from_pretrained_reads_local_folders_only(tmp_path):
    # a pipeline-style folder: transformer/ + scheduler/ (prediction type and betas come from the scheduler)
    dit = tiny_dit()
    dit.save_pretrained(tmp_path / "dit" / "transformer")
    DDIMScheduler(prediction_type="v_prediction").save_pretrained(tmp_path / "dit" / "scheduler")
    entry = dm.from_pretrained(tmp_path / "dit", schedule="vp-linear")
    assert isinstance(entry.net, dm.DiTAdapter) and entry.prediction == "v" and entry.schedule.name == "vp-linear"
    x = torch.randn(1, 2, 4, 4)
    with torch.no_grad():
        assert torch.allclose(entry.net(x, torch.tensor([5.0]), class_labels=torch.tensor([1])),
                              dm.DiTAdapter(dit).entry().net(x, torch.tensor([5.0]), class_labels=torch.tensor([1])),
                              atol=1e-6)

    unet = tiny_unet()
    unet.save_pretrained(tmp_path / "unet")
    entry = dm.UNet2DAdapter.from_pretrained(tmp_path / "unet", prediction="flow")
    assert entry.schedule.name == "rf" and entry.num_classes == 5

    sd3 = tiny_sd3()
    sd3.save_pretrained(tmp_path / "sd3" / "transformer")
    with pytest.raises(TypeError, match="prompt embeddings"):
        dm.from_pretrained(tmp_path / "sd3")
    pe, pooled, _, _ = prompts()
    entry = dm.from_pretrained(tmp_path / "sd3", prompt_embeds=pe, pooled_prompt_embeds=pooled, latent_size=4)
    assert isinstance(entry.net, dm.SD3Adapter) and entry.shape == (2, 4, 4)

    flux = tiny_flux()
    flux.save_pretrained(tmp_path / "flux")
    entry = dm.from_pretrained(tmp_path / "flux", prompt_embeds=pe, pooled_prompt_embeds=pooled, latent_size=(4, 4))
    assert isinstance(entry.net, dm.FluxAdapter) and entry.shape == (4, 8)

    with pytest.raises(FileNotFoundError, match="not a local folder"):
        dm.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        dm.from_pretrained("facebook/DiT-XL-2-256")  # a hub id is never fetched


def test_entry_for_picks_the_adapter():
    assert isinstance(dm.entry_for(tiny_unet()).net, dm.UNet2DAdapter)
    assert isinstance(dm.entry_for(tiny_dit(), schedule="vp-linear").net, dm.DiTAdapter)
    with pytest.raises(TypeError, match="no adapter"):
        dm.entry_for(torch.nn.Linear(2, 2))
