"""Adapters that turn diffusers networks into solversearch :class:`~solversearch.models.ModelEntry` objects.

With an entry a diffusers model can be searched (:func:`solversearch.search.search.search`), sampled natively
(:func:`solversearch.solvers.solver.sample` with ``entry.wrap(labels, guidance)``) and scored, and the solver it
gives plays in the model's diffusers pipeline through
:class:`~solversearch.integrations.diffusers_scheduler.SolverScheduler` -- the same numbers reach the network
either way (the adapter feeds the network exactly the timesteps the scheduler hands the pipeline).

=========================  ==================  ===================================  =========================
model                      schedule            network time input                   output -> declared type
=========================  ==================  ===================================  =========================
``UNet2DModel``            ``ddpm`` (default)  DDPM timestep ``N t - 1``            epsilon / v / sample
                           ``vp-linear``       ``1000 t``                           (as trained)
                           ``rf`` (flow)       ``1000 (1 - t)``                     noise - data -> -velocity
``DiTTransformer2DModel``  ``ddpm`` (default)  as UNet2DModel                       epsilon; a learned-sigma
                           or ``vp-linear``                                         output (2C channels) is cut
                                                                                    to its first C channels
``SD3Transformer2DModel``  ``rf``              ``timestep = 1000 (1 - t)``          noise - data -> velocity
``FluxTransformer2DModel`` ``rf``              ``timestep = (1 - t)`` (the model    noise - data -> velocity
                                               scales by 1000 itself, as the
                                               pipeline passes ``t / 1000``)
=========================  ==================  ===================================  =========================

``t`` is solversearch's schedule time (:mod:`solversearch.conventions`): rectified flow runs from ``t = 0``
(noise) to ``t = 1`` (data), so diffusers' flow sigma is ``1 - t`` and the network's output ``noise - data`` is
minus the velocity ``dx/dt``; the adapter negates it and declares ``velocity``.

**Conditioning.**  Class-conditional models (UNet2DModel with ``num_class_embeds``, DiT) take their labels from
the entry (``class_labels``; DiT's null class ``num_embeds_ada_norm`` is the unconditional label of guidance).
Text-to-image models take *prompt embeddings computed by the user* (the text encoders are not part of this
package): pass ``prompt_embeds`` (P, L, D) and ``pooled_prompt_embeds`` (P, D) for P prompts, and optionally the
negative / empty prompt's embeddings (1, L, D) and (1, D).  The entry then treats the prompts as P "classes":
sample ``k`` is conditioned on prompt ``labels[k]`` (``label_key="prompt"``), and the negative prompt is the null
label used by classifier-free guidance (``guidance > 1``), combined as the pipelines do.  Flux: the state is the
*packed* latent (``(H/2)(W/2)`` tokens of ``4 C`` channels, :func:`pack_latents` / :func:`unpack_latents`), the
image / text position ids are built from the latent size as FluxPipeline builds them, and a guidance-distilled
model (``guidance_embeds=True``) gets ``guidance_scale`` as its embedded guidance.

Only local folders are read (:meth:`DiffusersAdapter.from_pretrained` / :func:`from_pretrained` pass
``local_files_only=True``); nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

try:
    import diffusers
except ImportError as e:  # pragma: no cover - exercised only without diffusers
    raise ImportError("solversearch's diffusers integration needs diffusers: "
                      "pip install 'solversearch[diffusers]' (or pip install diffusers)") from e

from ..conventions import DDPMDiscrete, RectifiedFlow, Schedule, VPLinear, flow_sigma_from_t
from ..models import ModelEntry

# diffusers prediction_type -> solversearch prediction (VP models)
_VP_PREDICTIONS = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0", "eps": "epsilon", "v": "v",
                   "x0": "x0"}
_FLOW_PREDICTIONS = ("flow", "flow_prediction")


class FlowTimestep:
    """Solver time -> diffusers flow timestep ``num_train_timesteps * (1 - t)`` (as SolverScheduler computes it)."""

    def __init__(self, num_train_timesteps: int = 1000):
        self.num_train_timesteps = num_train_timesteps

    def __call__(self, t) -> torch.Tensor:
        t = t.to(torch.float64) if torch.is_tensor(t) else torch.as_tensor(t, dtype=torch.float64)
        return flow_sigma_from_t(t) * self.num_train_timesteps

    def __repr__(self) -> str:
        return f"FlowTimestep({self.num_train_timesteps})"


@dataclass
class DiffusersModelEntry(ModelEntry):
    """A :class:`ModelEntry` whose network takes diffusers' timestep convention.

    ``time_fn`` maps solver time to the network's time input (``None``: the schedule's own ``model_time``, which
    is already diffusers' convention for VP schedules); :meth:`wrap` hands it to the wrapped model.
    """

    time_fn: Callable | None = None

    def wrap(self, labels: torch.Tensor | None = None, guidance: float = 1.0, **kw):
        if self.time_fn is not None:
            kw.setdefault("time_fn", self.time_fn)
        return super().wrap(labels, guidance, **kw)


def _vp_schedule(schedule, beta_start: float, beta_end: float, num_train_timesteps: int) -> Schedule:
    if isinstance(schedule, Schedule):
        return schedule
    if schedule == "ddpm":
        return DDPMDiscrete(beta_start, beta_end, num_train_timesteps)
    if schedule == "vp-linear":
        return VPLinear(beta_min=beta_start * num_train_timesteps, beta_max=beta_end * num_train_timesteps,
                        time_scale=float(num_train_timesteps))
    raise ValueError(f"unknown VP schedule {schedule!r}; use 'ddpm' (the discrete table the model was trained on) "
                     "or 'vp-linear' (its continuous version, as the paper's DiT preset)")


class DiffusersAdapter(torch.nn.Module):
    """``net(x, timestep, **cond) -> prediction``: a diffusers model behind solversearch's network interface.

    Subclasses define :meth:`call` (the raw model call) and :meth:`entry`.  For flow models the output is negated
    (diffusers' ``noise - data`` becomes the velocity ``data - noise``).  The input is cast to the model's dtype
    and the output back to the input's, so a bf16 model can be searched with float32 solver states.
    """

    model_class: type | None = None
    default_subfolder: str = "transformer"

    def __init__(self, model: torch.nn.Module, flow: bool):
        super().__init__()
        self.model = model
        self.flow = bool(flow)

    @property
    def model_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def call(self, x: torch.Tensor, timestep: torch.Tensor, **cond) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, **cond) -> torch.Tensor:
        if torch.is_tensor(timestep) and timestep.device != x.device:
            timestep = timestep.to(x.device)  # the wrapper computes times on the CPU
        out = self.call(x.to(self.model_dtype), timestep, **cond)
        if out.shape[1] == 2 * x.shape[1] and out.shape[2:] == x.shape[2:]:
            out = out[:, : x.shape[1]]  # learned variance (DiT, improved DDPM): keep the mean prediction
        out = out.to(x.dtype)
        return -out if self.flow else out

    def entry(self, **kw) -> DiffusersModelEntry:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, local_dir: str | os.PathLike, subfolder: str | None = None, torch_dtype=None,
                        device=None, **entry_kwargs) -> DiffusersModelEntry:
        """Load the model from a *local* folder (a model folder or a pipeline folder) and build its entry.

        In a pipeline folder the model is read from ``subfolder`` (default: ``transformer`` or ``unet``) and,
        for VP models, the prediction type and betas from ``scheduler/scheduler_config.json`` unless given.
        """
        root, sub = _local_model_dir(local_dir, subfolder, cls.default_subfolder)
        kwargs = {"local_files_only": True}
        if importlib.util.find_spec("accelerate") is None:  # diffusers' default needs it and warns at every load
            kwargs["low_cpu_mem_usage"] = False
        if torch_dtype is not None:
            kwargs["torch_dtype"] = torch_dtype
        model = cls.model_class.from_pretrained(str(root), subfolder=sub, **kwargs)
        if device is not None:
            model = model.to(device)
        model.eval().requires_grad_(False)
        return cls._entry_from_pretrained(model, root, entry_kwargs)

    @classmethod
    def _entry_from_pretrained(cls, model, root: Path, entry_kwargs: dict) -> DiffusersModelEntry:
        raise NotImplementedError

    @classmethod
    def _needs_cond_error(cls):
        raise TypeError(f"{cls.__name__}.from_pretrained needs the prompt embeddings (prompt_embeds=..., "
                        "pooled_prompt_embeds=...), computed with the pipeline's text encoders")


def _local_model_dir(local_dir, subfolder: str | None, default_sub: str) -> tuple[Path, str | None]:
    root = Path(local_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{local_dir}: not a local folder (models are only loaded from local folders; "
                                "download them yourself, e.g. with huggingface-cli download, then pass the path)")
    if subfolder is not None:
        if not (root / subfolder / "config.json").is_file():
            raise FileNotFoundError(f"{root / subfolder}: no config.json")
        return root, subfolder
    if (root / "config.json").is_file():
        return root, None
    for sub in (default_sub, "transformer", "unet"):
        if (root / sub / "config.json").is_file():
            return root, sub
    raise FileNotFoundError(f"{root}: no config.json, and no {default_sub}/config.json (a pipeline folder)")


def _pipeline_scheduler_config(root: Path) -> dict:
    for p in (root / "scheduler" / "scheduler_config.json", root.parent / "scheduler" / "scheduler_config.json"):
        if p.is_file():
            return json.loads(p.read_text(encoding="utf-8"))
    return {}


def _vp_kwargs_from_scheduler(root: Path, entry_kwargs: dict) -> dict:
    """Fill prediction type and betas of a VP model from its pipeline's scheduler config (explicit args win)."""
    cfg = _pipeline_scheduler_config(root)
    out = dict(entry_kwargs)
    if not cfg:
        return out
    if cfg.get("beta_schedule", "linear") != "linear" or cfg.get("trained_betas") is not None:
        raise ValueError(f"{root}: the pipeline's scheduler uses beta_schedule={cfg.get('beta_schedule')!r}; "
                         "solversearch's VP schedules are the linear DDPM table and its continuous version")
    out.setdefault("prediction", cfg.get("prediction_type", "epsilon"))
    for k in ("beta_start", "beta_end", "num_train_timesteps"):
        if k in cfg:
            out.setdefault(k, cfg[k])
    return out


# --- class-conditional models ------------------------------------------------------------------------------

class UNet2DAdapter(DiffusersAdapter):
    """``UNet2DModel`` (pixel or latent DDPM UNets; class labels through ``num_class_embeds``).

    ``prediction``: ``epsilon`` | ``v_prediction`` | ``sample`` on a VP ``schedule`` (``ddpm`` or
    ``vp-linear``), or ``flow`` for a UNet trained on rectified flow (output ``noise - data``, timestep
    ``1000 (1 - t)``).
    """

    model_class = diffusers.UNet2DModel
    default_subfolder = "unet"

    def __init__(self, model, prediction: str = "epsilon"):
        super().__init__(model, flow=prediction in _FLOW_PREDICTIONS)
        self.prediction = prediction

    def call(self, x, timestep, class_labels=None):
        return self.model(x, timestep, class_labels=class_labels).sample

    def entry(self, name: str = "diffusers-unet2d", schedule: str | Schedule = "ddpm", beta_start: float = 1e-4,
              beta_end: float = 0.02, num_train_timesteps: int = 1000, num_classes: int | None = None,
              null_label: int | None = None, **extra) -> DiffusersModelEntry:
        cfg = self.model.config
        shape = (cfg.in_channels, *_hw(cfg.sample_size))
        if num_classes is None and cfg.class_embed_type is None and cfg.num_class_embeds:
            num_classes = cfg.num_class_embeds
        return _class_entry(self, name, shape, self.prediction, schedule, beta_start, beta_end,
                            num_train_timesteps, num_classes, null_label, extra)

    @classmethod
    def _entry_from_pretrained(cls, model, root, entry_kwargs):
        kw = _vp_kwargs_from_scheduler(root, entry_kwargs) if entry_kwargs.get("prediction") not in \
            _FLOW_PREDICTIONS else dict(entry_kwargs)
        prediction = kw.pop("prediction", "epsilon")
        return cls(model, prediction).entry(**kw)


class DiTAdapter(DiffusersAdapter):
    """``DiTTransformer2DModel`` (class labels; null class ``num_embeds_ada_norm``; learned sigma dropped)."""

    model_class = diffusers.DiTTransformer2DModel

    def __init__(self, model, prediction: str = "epsilon"):
        super().__init__(model, flow=prediction in _FLOW_PREDICTIONS)
        self.prediction = prediction

    def call(self, x, timestep, class_labels=None):
        return self.model(x, timestep=timestep, class_labels=class_labels).sample

    def entry(self, name: str = "diffusers-dit", schedule: str | Schedule = "ddpm", beta_start: float = 1e-4,
              beta_end: float = 0.02, num_train_timesteps: int = 1000, num_classes: int | None = None,
              null_label: int | None = None, **extra) -> DiffusersModelEntry:
        cfg = self.model.config
        shape = (cfg.in_channels, *_hw(cfg.sample_size))
        n = cfg.num_embeds_ada_norm
        num_classes = n if num_classes is None else num_classes
        null_label = n if null_label is None else null_label
        return _class_entry(self, name, shape, self.prediction, schedule, beta_start, beta_end,
                            num_train_timesteps, num_classes, null_label, extra)

    @classmethod
    def _entry_from_pretrained(cls, model, root, entry_kwargs):
        kw = _vp_kwargs_from_scheduler(root, entry_kwargs)
        prediction = kw.pop("prediction", "epsilon")
        return cls(model, prediction).entry(**kw)


def _hw(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _class_entry(adapter, name, shape, prediction, schedule, beta_start, beta_end, num_train_timesteps,
                 num_classes, null_label, extra) -> DiffusersModelEntry:
    if prediction in _FLOW_PREDICTIONS:
        sched, pred, time_fn = RectifiedFlow(), "velocity", FlowTimestep(num_train_timesteps)
    else:
        if prediction not in _VP_PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; known: epsilon, v_prediction, sample, flow")
        sched, pred, time_fn = _vp_schedule(schedule, beta_start, beta_end, num_train_timesteps), \
            _VP_PREDICTIONS[prediction], None
    return DiffusersModelEntry(name, adapter, sched, pred, shape, num_classes=num_classes, null_label=null_label,
                               label_key="class_labels", time_fn=time_fn,
                               description=f"diffusers {type(adapter.model).__name__}, {sched.name}, {prediction}",
                               extra=dict(extra))


# --- text-to-image flow transformers ------------------------------------------------------------------------

class _PromptAdapter(DiffusersAdapter):
    """A flow transformer conditioned on a table of prompt embeddings, indexed by the entry's labels."""

    def __init__(self, model, prompt_embeds: torch.Tensor, pooled_prompt_embeds: torch.Tensor,
                 negative_prompt_embeds: torch.Tensor | None = None,
                 negative_pooled_prompt_embeds: torch.Tensor | None = None):
        super().__init__(model, flow=True)
        pe, pp = _batch(prompt_embeds, 3, "prompt_embeds"), _batch(pooled_prompt_embeds, 2, "pooled_prompt_embeds")
        if pe.shape[0] != pp.shape[0]:
            raise ValueError(f"prompt_embeds has {pe.shape[0]} prompts, pooled_prompt_embeds {pp.shape[0]}")
        self.num_prompts = pe.shape[0]
        if (negative_prompt_embeds is None) != (negative_pooled_prompt_embeds is None):
            raise ValueError("give both negative_prompt_embeds and negative_pooled_prompt_embeds, or neither")
        self.has_negative = negative_prompt_embeds is not None
        if self.has_negative:
            ne = _batch(negative_prompt_embeds, 3, "negative_prompt_embeds")
            npool = _batch(negative_pooled_prompt_embeds, 2, "negative_pooled_prompt_embeds")
            if ne.shape[0] != 1 or npool.shape[0] != 1 or ne.shape[1:] != pe.shape[1:]:
                raise ValueError("the negative prompt embeddings must be one prompt shaped like prompt_embeds "
                                 f"(got {tuple(ne.shape)} and {tuple(npool.shape)} for {tuple(pe.shape)})")
            pe, pp = torch.cat([pe, ne]), torch.cat([pp, npool])
        # buffers (in the state dict): they move with .to(device) and enter the reference cache's fingerprint
        self.register_buffer("prompt_embeds", pe.detach().clone())
        self.register_buffer("pooled_prompt_embeds", pp.detach().clone())

    def _cond(self, prompt, x: torch.Tensor):
        if prompt is None:
            if self.num_prompts != 1:
                raise ValueError("several prompts: pass labels (prompt indices) to entry.wrap / draw")
            prompt = torch.zeros(x.shape[0], dtype=torch.long)
        prompt = prompt.to(self.prompt_embeds.device).long()
        dt = self.model_dtype
        return (self.prompt_embeds[prompt].to(device=x.device, dtype=dt),
                self.pooled_prompt_embeds[prompt].to(device=x.device, dtype=dt))

    def _entry(self, name, shape, num_train_timesteps, extra) -> DiffusersModelEntry:
        return DiffusersModelEntry(
            name, self, RectifiedFlow(), "velocity", tuple(shape), num_classes=self.num_prompts,
            null_label=self.num_prompts if self.has_negative else None, label_key="prompt",
            time_fn=FlowTimestep(num_train_timesteps),
            description=f"diffusers {type(self.model).__name__}, rectified flow, {self.num_prompts} prompt(s)",
            extra=dict(extra))


def _batch(t: torch.Tensor, ndim: int, what: str) -> torch.Tensor:
    if not torch.is_tensor(t):
        raise TypeError(f"{what}: expected a tensor, got {type(t).__name__}")
    if t.ndim == ndim - 1:
        t = t[None]
    if t.ndim != ndim:
        raise ValueError(f"{what}: expected {ndim} dimensions (prompts first), got shape {tuple(t.shape)}")
    return t


class SD3Adapter(_PromptAdapter):
    """``SD3Transformer2DModel``: latents (C, H, W), ``timestep = 1000 sigma``, prompt + pooled embeddings."""

    model_class = diffusers.SD3Transformer2DModel

    def call(self, x, timestep, prompt=None):
        ehs, pooled = self._cond(prompt, x)
        return self.model(hidden_states=x, timestep=timestep, encoder_hidden_states=ehs,
                          pooled_projections=pooled).sample

    def entry(self, name: str = "diffusers-sd3", latent_size=None, num_train_timesteps: int = 1000,
              **extra) -> DiffusersModelEntry:
        cfg = self.model.config
        h, w = _hw(latent_size if latent_size is not None else cfg.sample_size)
        return self._entry(name, (cfg.in_channels, h, w), num_train_timesteps, extra)

    @classmethod
    def _entry_from_pretrained(cls, model, root, entry_kwargs):
        kw = dict(entry_kwargs)
        adapter_kw = {k: kw.pop(k) for k in list(kw) if k.endswith("prompt_embeds")}
        if "prompt_embeds" not in adapter_kw or "pooled_prompt_embeds" not in adapter_kw:
            cls._needs_cond_error()
        return cls(model, **adapter_kw).entry(**kw)


class FluxAdapter(_PromptAdapter):
    """``FluxTransformer2DModel`` on packed latents ((H/2)(W/2) tokens, 4C channels).

    ``latent_size=(H, W)`` is the unpacked latent size (image size / 8 for Flux's VAE; both even).  The model
    is called as FluxPipeline calls it: ``timestep / 1000`` (it scales by 1000 inside), ``img_ids`` for the
    token grid, zero ``txt_ids``, and ``guidance = guidance_scale`` when the model embeds guidance.
    """

    model_class = diffusers.FluxTransformer2DModel

    def __init__(self, model, prompt_embeds, pooled_prompt_embeds, latent_size=(128, 128),
                 guidance_scale: float = 3.5, negative_prompt_embeds=None, negative_pooled_prompt_embeds=None):
        super().__init__(model, prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds,
                         negative_pooled_prompt_embeds)
        h, w = _hw(latent_size)
        if h % 2 or w % 2:
            raise ValueError(f"latent_size {(h, w)}: Flux packs 2x2 latent patches, both sides must be even")
        self.latent_size = (h, w)
        self.register_buffer("embedded_guidance", torch.tensor(float(guidance_scale), dtype=torch.float32))
        self.register_buffer("img_ids", latent_image_ids(h // 2, w // 2))
        self.register_buffer("txt_ids", torch.zeros(self.prompt_embeds.shape[1], 3))

    @property
    def guidance_scale(self) -> float:
        return float(self.embedded_guidance)

    def call(self, x, timestep, prompt=None):
        ehs, pooled = self._cond(prompt, x)
        guidance = None
        if self.model.config.guidance_embeds:
            guidance = self.embedded_guidance.to(x.device).reshape(1).expand(x.shape[0])
        return self.model(hidden_states=x, timestep=timestep / 1000, guidance=guidance, pooled_projections=pooled,
                          encoder_hidden_states=ehs, txt_ids=self.txt_ids.to(x.device, x.dtype),
                          img_ids=self.img_ids.to(x.device, x.dtype)).sample

    def entry(self, name: str = "diffusers-flux", num_train_timesteps: int = 1000, **extra) -> DiffusersModelEntry:
        h, w = self.latent_size
        tokens = (h // 2) * (w // 2)
        return self._entry(name, (tokens, self.model.config.in_channels), num_train_timesteps, extra)

    @classmethod
    def _entry_from_pretrained(cls, model, root, entry_kwargs):
        kw = dict(entry_kwargs)
        adapter_kw = {k: kw.pop(k) for k in list(kw)
                      if k.endswith("prompt_embeds") or k in ("latent_size", "guidance_scale")}
        if "prompt_embeds" not in adapter_kw or "pooled_prompt_embeds" not in adapter_kw:
            cls._needs_cond_error()
        return cls(model, **adapter_kw).entry(**kw)


def latent_image_ids(rows: int, cols: int) -> torch.Tensor:
    """Flux's image position ids for a ``rows x cols`` token grid (FluxPipeline._prepare_latent_image_ids)."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(rows)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/2)(W/2), 4C), as FluxPipeline packs its latents."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(packed: torch.Tensor, latent_size) -> torch.Tensor:
    """The inverse of :func:`pack_latents` for a latent of size ``(H, W)``."""
    h, w = _hw(latent_size)
    b, _, ch = packed.shape
    x = packed.view(b, h // 2, w // 2, ch // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, ch // 4, h, w)


# --- one entry point ----------------------------------------------------------------------------------------

ADAPTERS: dict[str, type[DiffusersAdapter]] = {
    "UNet2DModel": UNet2DAdapter,
    "DiTTransformer2DModel": DiTAdapter,
    "Transformer2DModel": DiTAdapter,  # old DiT checkpoints name the legacy class
    "SD3Transformer2DModel": SD3Adapter,
    "FluxTransformer2DModel": FluxAdapter,
}


def adapter_for(model: torch.nn.Module) -> type[DiffusersAdapter]:
    for cls in type(model).__mro__:
        if cls.__name__ in ADAPTERS:
            return ADAPTERS[cls.__name__]
    raise TypeError(f"no adapter for {type(model).__name__}; known: {', '.join(ADAPTERS)}")


def entry_for(model: torch.nn.Module, adapter_kwargs: dict | None = None, **entry_kwargs) -> DiffusersModelEntry:
    """The entry of an already loaded diffusers model (the adapter is picked by the model's class)."""
    return adapter_for(model)(model, **(adapter_kwargs or {})).entry(**entry_kwargs)


def from_pretrained(local_dir: str | os.PathLike, subfolder: str | None = None, torch_dtype=None, device=None,
                    **kwargs) -> DiffusersModelEntry:
    """Load a diffusers model from a local folder and build its entry (the adapter is picked by its config's
    ``_class_name``).  ``kwargs`` go to the adapter and its ``entry`` (prediction, schedule, prompt embeddings,
    latent_size, name, ...)."""
    root, sub = _local_model_dir(local_dir, subfolder, "transformer")
    cfg = json.loads(((root / sub) if sub else root).joinpath("config.json").read_text(encoding="utf-8"))
    cls = ADAPTERS.get(cfg.get("_class_name"))
    if cls is None:
        raise TypeError(f"{root}: model class {cfg.get('_class_name')!r} has no adapter; known: {', '.join(ADAPTERS)}")
    return cls.from_pretrained(root, subfolder=sub, torch_dtype=torch_dtype, device=device, **kwargs)


__all__ = ["DiffusersModelEntry", "DiffusersAdapter", "UNet2DAdapter", "DiTAdapter", "SD3Adapter", "FluxAdapter",
           "FlowTimestep", "ADAPTERS", "adapter_for", "entry_for", "from_pretrained", "pack_latents",
           "unpack_latents", "latent_image_ids"]
