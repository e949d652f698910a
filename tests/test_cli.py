"""The command line: user errors are one line with exit code 2; the jobs write what they promise."""

import json

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from solversearch.cli import main, parse_nfes
from solversearch.solvers import io

SMALL = ["--samples", "128", "--val-samples", "64", "--batch-size", "64", "--epochs", "2", "--quiet"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_parse_nfes():
    assert parse_nfes("3-5") == [3, 4, 5]
    assert parse_nfes("6,4,4") == [4, 6]


@pytest.mark.parametrize("args, needle", [
    (["search", "--model", "gmm-rf", "--nfe", "0"], "NFE must be a positive integer"),
    (["search", "--model", "gmm-rf", "--nfe", "-3"], "--nfe"),
    (["search", "--model", "nope", "--nfe", "4"], "unknown model 'nope'"),
    (["sample", "--model", "gmm-rf", "--solver", "missing.json", "--out", "x.safetensors"], "missing.json"),
    (["sample", "--model", "gmm-rf", "--solver", "rk45", "--nfe", "4", "--out", "x.safetensors"],
     "unknown solver 'rk45'"),
    (["bench", "--model", "gmm-vp", "--nfe", "x"], "expected a number"),
])
def test_user_errors_exit_2_without_traceback(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert "Traceback" not in r.output


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = run("search", "--model", "gmm2d-rf", "--nfe", "3", "--out", blocker / "sub", *SMALL)
    assert r.exit_code == 2 and "cannot create output folder" in r.output


def test_malformed_solver_file_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "solversearch.solver", "format_version": 99}')
    r = run("sample", "--model", "gmm-rf", "--solver", bad, "--out", tmp_path / "x.safetensors")
    assert r.exit_code == 2
    assert str(bad) in r.output and "format_version" in r.output


def test_missing_model_weights_are_one_line_naming_the_training_command(tmp_path, monkeypatch):
    import solversearch.models.fashion as fashion

    monkeypatch.setattr(fashion, "WEIGHTS_DIR", tmp_path / "nowhere")
    r = run("search", "--model", "fashion-rf", "--nfe", "4", "--out", tmp_path / "o", "--quiet")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "scripts/train_fashion.py --what fashion-rf" in r.output and "nowhere" in r.output


def test_help_shows_an_example():
    for cmd in ("search", "sample", "bench", "solvers"):
        r = run(cmd, "--help")
        assert r.exit_code == 0 and "Example:" in r.output and "solversearch " + cmd in r.output


def test_search_writes_solver_report_and_plot(tmp_path):
    out = tmp_path / "run"
    r = run("search", "--model", "gmm2d-rf", "--nfe", "4", "--out", out, "--eval-samples", "128", *SMALL)
    assert r.exit_code == 0, r.output
    solver = io.load(out / "solver-nfe4.json", expect_nfe=4)
    assert solver.name == "searched" and solver.meta["model"] == "gmm2d-rf"
    rows = json.loads((out / "report.json").read_text())
    assert {"model", "solver", "nfe", "grid", "rmse"} <= set(rows[0])
    assert any(r["solver"] == "searched" for r in rows) and any(r["solver"] == "dpm++2m" for r in rows)
    assert (out / "solver-nfe4.png").read_bytes()[:4] == b"\x89PNG"
    assert "| searched |" in (out / "report.md").read_text()
    spent = solver.meta["evaluations"]  # the search's cost is printed and kept in the solver file
    assert spent["search"] > 0 and f"NFE 4 {spent['warm_start'] + spent['search']:,}" in r.output


def test_bench_json_rows_and_sample(tmp_path):
    js = tmp_path / "bench.json"
    r = run("bench", "--model", "gmm2d-vp", "--nfe", "3,4", "--json", js, "--eval-samples", "64", *SMALL)
    assert r.exit_code == 0, r.output
    rows = json.loads(js.read_text())
    searched = [x for x in rows if x["solver"] == "searched"]
    assert sorted(x["nfe"] for x in searched) == [3, 4]
    assert all(x["model"] == "gmm2d-vp" and x["rmse"] > 0 for x in rows)
    assert {x["grid"] for x in rows if x["solver"] == "ddim"} == {"uniform-t", "uniform-lambda", "karras",
                                                                  "quadratic"}
    # sampling with a preset and a classic solver
    out = tmp_path / "x.safetensors"
    r = run("sample", "--model", "gmm-vp", "--solver", "dit-xl-2-256", "--nfe", "6", "--n", "8", "--out", out)
    assert r.exit_code == 0, r.output
    t = load_file(str(out))
    assert t["samples"].shape == (8, 64) and t["labels"].shape == (8,)


def test_same_command_under_torchrun_two_processes(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "run"
    cmd = [str(torchrun), "--nproc-per-node", "2", "--master-port", "29533", "-m", "solversearch.cli", "search",
           "--model", "gmm2d-rf", "--nfe", "3,4", "--out", str(out), "--cache", str(tmp_path / "cache"),
           "--eval-samples", "0", *SMALL]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for nfe in (3, 4):
        s = io.load(out / f"solver-nfe{nfe}.json", expect_nfe=nfe)
        assert s.meta["processes"] == 2
    assert proc.stdout.count("files written:") == 1  # rank 0 alone reports and writes


def _bundled(name):
    from solversearch.models import get_model

    try:
        return get_model(name)
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_main_job_on_the_image_model_writes_fd_report_grid_and_curves(tmp_path):
    """The README's main job, shrunk: FD on every row, a sample grid (one row per solver), the classic curves."""
    _bundled("fashion-rf")
    out = tmp_path / "run"
    r = run("search", "--model", "fashion-rf", "--nfe", "3", "--out", out, "--samples", "8", "--val-samples", "4",
            "--batch-size", "8", "--epochs", "1", "--eval-samples", "8", "--reference", "ab2:10",
            "--eval-target", "ab2:10", "--quiet")
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "report.json").read_text())
    searched = [x for x in rows if x["solver"] == "searched"]
    assert len(searched) == 1 and all(x["fd"] >= 0 and x["fd_model"] > -1e-4 and x["samples"] == 8 for x in rows)
    # the evaluation target itself (ab2:10 from the same noises) is at distance 0 from the model's samples (up to
    # the rounding of a rank-deficient 8-sample covariance), every other solver farther
    target_row = [x for x in rows if x["solver"] == "ab2" and x["nfe"] == 10 and x["grid"] == "uniform-t"]
    assert len(target_row) == 1 and abs(target_row[0]["fd_model"]) < 1e-4
    assert min(x["fd_model"] for x in rows if x is not target_row[0]) > 1e-3
    # every classic solver at NFE 3, and the best three also at other NFEs
    assert {"euler", "ab2", "dpm++2m", "ipndm", "unipc"} <= {x["solver"] for x in rows if x["nfe"] == 3}
    assert len({x["solver"] for x in rows if x["nfe"] == 10}) == 3
    for f in ("samples.png", "error_vs_nfe.png", "solver-nfe3.png"):
        assert (out / f).read_bytes()[:4] == b"\x89PNG", f
    report = (out / "report.md").read_text()
    assert "## FD" in report and "## FD to model" in report and "## RMSE" in report and "FD " in r.output
    assert "classic needs NFE" in r.output and (out / "fd_model_vs_nfe.png").is_file()


def test_sample_grid_png_with_a_preset_on_the_ddpm_image_model(tmp_path):
    _bundled("fashion-ddpm")
    out = tmp_path / "grid.png"
    r = run("sample", "--model", "fashion-ddpm", "--solver", "dit-xl-2-256", "--nfe", "5", "--cfg", "1.5", "--n",
            "12", "--out", out)
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:4] == b"\x89PNG" and "12 samples with dit-xl-2-256 (NFE 5)" in r.output
