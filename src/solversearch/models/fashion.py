"""The bundled real image models: class-conditional diffusers ``UNet2DModel``s trained on Fashion-MNIST.

* ``fashion-rf``: rectified flow in diffusers' flow convention (sigma = 1 - t, ``x = (1 - sigma) data + sigma
  noise``, timestep ``1000 sigma``, output ``noise - data``), the convention of SD3/Flux pipelines.
* ``fashion-ddpm``: epsilon prediction on the discrete DDPM table (beta 1e-4 -> 0.02, 1000 steps, integer
  timesteps 0..999), the convention of DiT/ADM.

Both are stored as diffusers pipeline-like folders (``weights/<name>/unet`` + ``scheduler``) and loaded through
:mod:`solversearch.integrations.diffusers_models` exactly as a hub model would be, so the bundled models test the
same code path users take.  Classes 0-9, null label 10 for classifier-free guidance (trained with label dropout).

Architecture (one config for both, :func:`fashion_unet_config`): channels (32, 48, 64) at 28/14/7, one ResNet
per level down (two up), an attention mid-block at 7x7 (4 heads), 8 norm groups; 0.90 M parameters, 3.6 MB in
fp32.  Small on purpose: a search runs it thousands of times on CPU.  Measured on this 2-core machine while
another job kept one core busy (so 2 threads could not be timed fairly: they ran ~1.8 s, all barrier waits):
1 thread, batch 64 forward 255-290 ms; a training step at batch 128 (forward + backward + AdamW) 1.5-1.6 s alone,
3.0 s with both trainings and that job sharing the two cores.  The environment notes give ~120 ms for a similar
0.6 M U-Net forward at batch 64 on 2 idle threads.

The training objectives live here (not in the script) so the tests can check them against their closed forms.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
NAMES = ("fashion-rf", "fashion-ddpm")
NUM_CLASSES = 10
NULL_LABEL = 10
IMAGE_SHAPE = (1, 28, 28)
DDPM_BETA_START, DDPM_BETA_END, NUM_TRAIN_TIMESTEPS = 1e-4, 0.02, 1000


def model_dir(name: str) -> Path:
    if name not in NAMES:
        raise KeyError(f"unknown bundled image model {name!r}; known: {', '.join(NAMES)}")
    return WEIGHTS_DIR / name


def train_command(name: str) -> str:
    return f"python scripts/train_fashion.py --what {name}"


def fashion_unet_config() -> dict:
    """The ``UNet2DModel`` config both bundled models use (28x28x1, classes 0-9 + null label 10)."""
    return dict(
        sample_size=28, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 48, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        add_attention=True, attention_head_dim=16, norm_num_groups=8, num_class_embeds=NUM_CLASSES + 1,
    )


def build_unet(config: dict | None = None):
    from diffusers import UNet2DModel

    return UNet2DModel(**(config or fashion_unet_config()))


def architecture_config(name: str) -> dict:
    """The network config of bundled model ``name`` (what its training state records and checks on resume)."""
    model_dir(name)
    return fashion_unet_config()


def build_model(name: str):
    """A freshly initialised network of bundled model ``name``."""
    return build_unet(architecture_config(name))


def model_subfolder(name: str) -> str:
    """The diffusers subfolder holding the network (``unet`` for UNets, as in diffusers' pipelines)."""
    model_dir(name)
    return "unet"


def scheduler_for(name: str):
    """The diffusers scheduler saved beside the UNet (what a diffusers pipeline would sample with)."""
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    if name == "fashion-rf":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=1.0)
    if name == "fashion-ddpm":
        return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_start=DDPM_BETA_START,
                             beta_end=DDPM_BETA_END, beta_schedule="linear", prediction_type="epsilon")
    raise KeyError(f"unknown bundled image model {name!r}; known: {', '.join(NAMES)}")


# --- training objectives -------------------------------------------------------------------------------------

def ddpm_alphas_cumprod() -> torch.Tensor:
    """alpha-bar of the DDPM table (float64), from the same schedule object the samplers use."""
    from ..conventions import DDPMDiscrete

    return DDPMDiscrete(DDPM_BETA_START, DDPM_BETA_END, NUM_TRAIN_TIMESTEPS).alphas_cumprod()


def flow_inputs(data: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor):
    """diffusers flow matching: ``x = (1 - sigma) data + sigma noise``, timestep ``1000 sigma``, target ``noise - data``."""
    s = sigma.to(data.dtype).view(-1, *([1] * (data.ndim - 1)))
    return (1.0 - s) * data + s * noise, sigma * NUM_TRAIN_TIMESTEPS, noise - data


def ddpm_inputs(data: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor):
    """DDPM: ``x = sqrt(abar_n) data + sqrt(1 - abar_n) noise`` at integer ``n``, target the noise."""
    abar = ddpm_alphas_cumprod()[timesteps.long().cpu()].to(device=data.device, dtype=data.dtype)
    abar = abar.view(-1, *([1] * (data.ndim - 1)))
    return abar.sqrt() * data + (1.0 - abar).sqrt() * noise, timesteps, noise


def training_batch(what: str, data: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                   label_dropout: float = 0.1) -> dict:
    """One objective's inputs and target from clean ``data`` in [-1, 1], drawn from ``generator``.

    Rectified flow draws sigma uniformly on [0, 1]: the solvers query the network over the whole span, both ends
    included (where a logit-normal density puts almost no mass), and a search fits them to that network's error
    at every time.  DDPM draws integer timesteps uniformly, as in DDPM/DiT.  A fraction ``label_dropout`` of
    labels becomes the null label (classifier-free guidance).
    """
    n = data.shape[0]
    noise = torch.randn(data.shape, generator=generator, dtype=data.dtype)
    drop = torch.rand(n, generator=generator) < label_dropout
    labels_in = torch.where(drop, torch.full_like(labels, NULL_LABEL), labels)
    if what == "fashion-rf":
        time = torch.rand(n, generator=generator, dtype=data.dtype)
        x, timestep, target = flow_inputs(data, noise, time)
    elif what == "fashion-ddpm":
        time = torch.randint(0, NUM_TRAIN_TIMESTEPS, (n,), generator=generator)
        x, timestep, target = ddpm_inputs(data, noise, time)
    else:
        raise ValueError(f"unknown objective {what!r}; use one of {', '.join(NAMES)}")
    return {"x": x, "timestep": timestep, "labels": labels_in, "target": target, "noise": noise, "time": time,
            "data": data}


def training_loss(model, batch: dict) -> torch.Tensor:
    """Plain MSE between the UNet's output and the batch's target."""
    out = model(batch["x"], batch["timestep"], class_labels=batch["labels"]).sample
    return torch.nn.functional.mse_loss(out, batch["target"])


# --- loading --------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _fashion_fd():
    from ..evaluation.fd import FashionFD

    return FashionFD()


def fd_metrics(reference=None) -> dict:
    """Sample-quality metrics every evaluation of these models reports: ``fd``, the Fréchet distance of the
    bundled classifier's features to the Fashion-MNIST test set (one shared instance: its test statistics are
    computed once per process), and with ``reference`` (the model's own accurate samples from the evaluation
    noises) ``fd_model``, the distance to those samples.

    ``fd_model`` is 0 for a perfect solver whatever the model's quality; ``fd`` is not: on a small model, few-step
    solvers smooth away artefacts of the model's own ODE solution and score a *lower* FD than it, so ``fd`` alone
    would reward truncation error.
    """
    from ..evaluation.fd import frechet_distance

    fd = _fashion_fd()
    out = {"fd": fd.fd}
    if reference is not None:
        ref = fd.stats(reference)
        out["fd_model"] = lambda x: frechet_distance(*fd.stats(x), *ref)
    return out


def load_fashion_model(name: str):
    """The bundled model ``name`` as a :class:`~solversearch.models.ModelEntry`, through the diffusers adapter."""
    folder = model_dir(name)
    if not ((folder / "unet" / "config.json").is_file() and (folder / "scheduler" / "scheduler_config.json").is_file()
            and any((folder / "unet").glob("*.safetensors"))):
        raise FileNotFoundError(f"the weights of {name!r} are missing from {folder} (expected unet/ and "
                                f"scheduler/); create them with `{train_command(name)}`")
    from ..integrations.diffusers_models import from_pretrained

    common = dict(name=name, num_classes=NUM_CLASSES, null_label=NULL_LABEL)
    if name == "fashion-rf":
        entry = from_pretrained(folder, prediction="flow", **common)
    else:
        entry = from_pretrained(folder, schedule="ddpm", **common)
    entry.exact = False
    entry.extra["metrics"] = fd_metrics
    entry.description = (f"Fashion-MNIST class-conditional UNet2DModel (0.9 M params), "
                         f"{'rectified flow' if name == 'fashion-rf' else 'DDPM epsilon'}; bundled, trained here")
    return entry


__all__ = ["fashion_unet_config", "build_unet", "scheduler_for", "model_dir", "load_fashion_model", "flow_inputs",
           "ddpm_inputs", "training_batch", "training_loss", "ddpm_alphas_cumprod", "NAMES", "NUM_CLASSES",
           "NULL_LABEL", "WEIGHTS_DIR"]
