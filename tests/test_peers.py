"""diffusers' own schedulers run through real diffusers stepping on the exact mixtures: exact cross-checks of the
time conventions against solversearch's solvers, NFE counting, convergence, and ``bench --peers``."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers")

from click.testing import CliRunner  # noqa: E402

from solversearch.cli import main  # noqa: E402
from solversearch.evaluation import harness, peers  # noqa: E402
from solversearch.models import ModelEntry, get_model  # noqa: E402
from solversearch.solvers import classic  # noqa: E402

N = 64  # samples per check


@pytest.fixture(scope="module")
def ddpm():
    return peers.gmm_ddpm_entry()


@pytest.fixture(scope="module")
def rf():
    return get_model("gmm-rf")


def _peer(pool, cls, grid):
    return next(p for p in pool if p.cls == cls and p.grid == grid)


def _close(x, ref, rel=1e-5):
    return float((x - ref).abs().max()) <= rel * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("nfe", [5, 10])
def test_ddim_trailing_equals_our_ddim(ddpm, nfe):
    """DDIM (trailing, set_alpha_to_one=False) on the DDPM table is our 'ddim' on t = (timestep + 1) / 1000 (up to
    diffusers' float32 alphas_cumprod: 1 - 0.9999 at the data end carries ~1e-4 relative rounding)."""
    peer = _peer(peers.VP_PEERS, "DDIMScheduler", "trailing")
    assert peer.config["set_alpha_to_one"] is False
    noise, labels = ddpm.draw(N, seed=1)
    times = peers.peer_times(peer, ddpm, nfe)
    assert float(times[0]) == 1.0 and abs(float(times[-1]) - ddpm.schedule.t_data) < 1e-12
    ours = harness.run_solver(classic.build("ddim", nfe, ddpm.schedule, times), ddpm, noise, labels)
    x, calls, steps = peers.run_peer(peer, ddpm, noise, labels, 1.0, nfe)
    assert calls == steps == nfe
    assert _close(x, ours)


def test_ddim_non_divisor_steps_is_not_a_grid(ddpm):
    """diffusers' DDIM steps to timestep - 1000 // steps: at 6 trailing steps that is not the next timestep."""
    with pytest.raises(ValueError, match="not a grid"):
        peers.peer_times(_peer(peers.VP_PEERS, "DDIMScheduler", "trailing"), ddpm, 6)


@pytest.mark.parametrize("grid", ["shift=1", "shift=1,sigmas=linspace(1,1/N)"])
def test_flow_match_euler_equals_our_euler(rf, grid):
    """FlowMatchEuler (shift 1) is our 'euler' on t = 1 - sigma: output noise - data = -velocity."""
    peer = _peer(peers.FLOW_PEERS, "FlowMatchEulerDiscreteScheduler", grid)
    noise, labels = rf.draw(N, seed=2)
    for nfe in (5, 8):
        times = peers.peer_times(peer, rf, nfe)
        assert float(times[0]) == 0.0 and float(times[-1]) == 1.0
        ours = harness.run_solver(classic.build("euler", nfe, rf.schedule, times), rf, noise, labels)
        x, calls, _ = peers.run_peer(peer, rf, noise, labels, 1.0, nfe)
        assert calls == nfe
        assert _close(x, ours)


@pytest.mark.parametrize("model,cls,grid", [("ddpm", "DPMSolverMultistepScheduler", "lu-lambdas"),
                                            ("ddpm", "DPMSolverMultistepScheduler", "karras"),
                                            ("rf", "DPMSolverMultistepScheduler", "flow-sigmas,shift=1")])
def test_dpmsolver_fed_its_sigma_equals_our_dpmpp2m(model, cls, grid, request):
    """Fractional times: fed the time of its own sigma, DPM-Solver++ 2M is our 'dpm++2m' on that grid; fed the
    rounded timestep diffusers hands the pipeline, it differs (the cost of diffusers' int64 timesteps)."""
    entry = request.getfixturevalue(model)
    pool = peers.FLOW_PEERS if model == "rf" else peers.VP_PEERS
    peer = _peer(pool, cls, grid)
    noise, labels = entry.draw(N, seed=3)
    nfe = 6
    times = peers.peer_times(peer, entry, nfe)
    ours = harness.run_solver(classic.build("dpm++2m", nfe, entry.schedule, times), entry, noise, labels)
    exact_time, _, _ = peers.run_peer(peer, entry, noise, labels, 1.0, nfe, time_source="sigma")
    assert _close(exact_time, ours, 1e-5)
    rounded, _, _ = peers.run_peer(peer, entry, noise, labels, 1.0, nfe)
    assert float((rounded - ours).abs().max()) > 1e-4


def _target(entry, noise, labels):
    """An accurate reference: AB4 with 400 steps (error ~1e-6, far below any peer's at NFE 10)."""
    grid = "uniform-t" if entry.schedule.name == "rf" else "quadratic"
    return harness.run_solver(classic.build("ab4", 400, entry.schedule, grid), entry, noise, labels)


@pytest.mark.parametrize("model", ["ddpm", "rf"])
def test_every_peer_converges_and_counts_its_calls(model, request):
    entry = request.getfixturevalue(model)
    noise, labels = entry.draw(N, seed=4)
    target = _target(entry, noise, labels)
    ev = harness.EvalSet(noise, labels, target, 1.0, "ab4:400", float(target.max() - target.min()))
    for peer in peers.peers_for(entry):
        r5, r10 = (peers.peer_row(peer, entry, ev, nfe) for nfe in (5, 10))
        assert r5["solver"].startswith("diffusers:") and r5["grid"] == peer.grid
        assert (r5["nfe"], r10["nfe"]) == (5, 10), peer.label
        assert r10["rmse"] < r5["rmse"], (peer.label, r5["rmse"], r10["rmse"])


def test_counted_nfe_is_the_number_of_network_calls(ddpm):
    """Rows report calls counted at the network itself (guidance: a cond/uncond pair in one batch counts once)."""
    seen = []

    def net(x, t, class_labels=None):
        seen.append(x.shape[0])
        return ddpm.net(x, t, class_labels=class_labels)

    counting = ModelEntry("counting", net, ddpm.schedule, "epsilon", ddpm.shape, num_classes=10, null_label=10)
    noise, labels = counting.draw(40, seed=5)
    ev = harness.EvalSet(noise, labels, torch.zeros_like(noise), 2.0, "zeros", 1.0)
    for peer in peers.VP_PEERS:
        seen.clear()
        row = peers.peer_row(peer, counting, ev, 7, batch=16)  # 3 batches: 16, 16, 8
        assert len(seen) == 3 * row["nfe"] == 3 * 7, peer.label
        assert sorted(set(seen)) == [16, 32], peer.label  # guided: cond + uncond in one call


def test_wrong_kind_of_model_is_refused(ddpm):
    with pytest.raises(ValueError, match="flow"):
        peers.run_peer(peers.FLOW_PEERS[0], ddpm, *ddpm.draw(2, seed=0), 1.0, 5)


def test_bench_peers_writes_diffusers_rows(tmp_path):
    js = tmp_path / "bench.json"
    r = CliRunner().invoke(main, ["bench", "--model", "gmm2d-rf", "--nfe", "5", "--no-search", "--peers",
                                  "--eval-samples", "64", "--json", str(js), "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = json.loads(js.read_text())
    mine = [x for x in rows if x["solver"].startswith("diffusers:")]
    assert {x["solver"] for x in mine} == {p.name for p in peers.FLOW_PEERS}
    assert all(x["nfe"] == 5 and x["model"] == "gmm2d-rf" and x["rmse"] > 0 for x in mine)
    assert "diffusers:FlowMatchEulerDiscrete" in r.output
    r = CliRunner().invoke(main, ["bench", "--model", "gmm2d-rf", "--nfe", "5", "--no-search",
                                  "--eval-samples", "16", "--json", str(js), "--quiet"], catch_exceptions=False)
    assert not any(x["solver"].startswith("diffusers:") for x in json.loads(js.read_text()))  # off by default
