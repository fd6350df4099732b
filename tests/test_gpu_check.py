"""bench/gpu_check.sh, tried on the CPU: its dry run goes through every step at tiny sizes and writes the
report; without a GPU the real run stops at once, saying why; a step past its time limit is stopped and its
output kept. The script runs only as a subprocess, as a user runs it."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minigpt_rlhf.tokenizer import get_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def gpu_check(*args, timeout=None):
    """`bash bench/gpu_check.sh ARGS` from the repository root, with this interpreter; the finished process."""
    env = {k: v for k, v in os.environ.items() if k != "OUT"} | {"PYTHON": sys.executable}
    return subprocess.run(["bash", "bench/gpu_check.sh", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def report_figures(report: str) -> dict:
    """The report's figures: its one JSON block, step -> {status, seconds, figures...}, in the order run."""
    return json.loads(re.search(r"```json\n(.*?)\n```", report, re.S).group(1))


def steps_in_help() -> list[str]:
    """The steps the script offers, in its order, as its --help states them (--only's choices)."""
    out = gpu_check("--help", timeout=120).stdout
    return re.search(r"comma-separated steps, from ((?:\w+, )*\w+)", " ".join(out.split())).group(1).split(", ")


def test_dry_run_goes_through_every_step_and_writes_the_report(tmp_path):
    # no practical time limit: the steps' limits are for the GPU run, and on a busy 2-core machine the tiny steps
    # take many minutes instead of the seconds of an idle one (about a minute in all)
    proc = gpu_check("--dry_run", f"--out={tmp_path}", "--time_limit=36000")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("gpu_check: dry run") and "every step ran" in last, last
    report = (tmp_path / "gpu_check.md").read_text()
    figures = report_figures(report)
    steps = steps_in_help()
    assert {"tests", "sft", "ppo", "pipeline"} <= set(steps)
    assert list(figures) == steps and all(f["status"] == "ok" for f in figures.values())
    assert re.findall(r"^## (\w+): ok, \d+ s$", report, re.M) == steps  # each step's command and output, in order
    assert figures["tests"]["collected"] == 5  # the CUDA-marked tests are found (and, without CUDA, not run)
    rows = {(r["stage"], r["mode"]) for r in figures["sft"]["rows"]}
    assert rows == {(s, m) for s in ("pretrain", "sft_grouped") for m in ("eager", "compiled")}
    row = next(r for r in figures["sft"]["rows"] if r["stage"] == "pretrain")
    d, L, T = 32, 1, 128  # the tiny shape, 128-token corpus windows
    V = (get_tokenizer().n_vocab + 63) // 64 * 64
    N = V * d + L * (12 * d * d + 13 * d) + 2 * d  # the (tied) embedding, each block's weights and biases, ln_f
    assert row["n_params"] == N and row["flops_per_token"] == 6 * N + 12 * L * T * d
    parts = figures["ppo"]["cut"]["median_s"]
    total = sum(parts[k] for k in ("generate", "policy", "ref", "value", "rm", "adv", "update"))
    assert figures["ppo"]["cut"]["iteration_s"] == pytest.approx(total)
    assert figures["ppo"]["first_ratio_mean"] == 1.0  # eager fp32 on the CPU: exactly 1
    assert 0.0 <= figures["pipeline"]["ppo"]["win_rate_vs_sft"] <= 1.0
    assert last in report
    # the summary states what was measured, nothing it is held against
    assert not re.search(r"target|meets|misses", last, re.I), last
    compiled = {r["stage"]: r["tokens_per_s"] for r in figures["sft"]["rows"] if r["mode"] == "compiled"}
    eager = {r["stage"]: r["tokens_per_s"] for r in figures["sft"]["rows"] if r["mode"] == "eager"}
    assert f"compiled {compiled['sft_grouped'] / eager['sft_grouped']:.2f}x eager" in last
    share = parts["generate"] / figures["ppo"]["cut"]["iteration_s"]
    assert f"generation {share:.0%}" in last


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_cuda_the_real_run_stops_before_any_work_and_says_why(tmp_path):
    proc = gpu_check(f"--out={tmp_path}", timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"no CUDA GPU is visible.*--dry_run", proc.stderr), proc.stderr
    assert "===" not in proc.stdout and not (tmp_path / "gpu_check.md").exists()  # no step ran, no report


def test_a_step_past_its_time_limit_is_stopped_and_its_output_kept(tmp_path):
    t0 = time.perf_counter()
    proc = gpu_check("--dry_run", "--only=tests", "--stall=tests", "--time_limit=3", f"--out={tmp_path}",
                     timeout=600)
    assert time.perf_counter() - t0 < 300  # far less than the hour the step would sleep
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = report_figures((tmp_path / "gpu_check.md").read_text())
    assert list(figures) == ["tests"]
    assert figures["tests"]["status"] == "stopped at its time limit of 3 s"
    assert figures["tests"]["seconds"] < 30
    report = (tmp_path / "gpu_check.md").read_text()
    assert "gpu_check: stalling on purpose (--stall)" in report.split("## tests:")[1]  # its output is kept
    assert "FAILED: tests" in proc.stdout.strip().splitlines()[-1]
