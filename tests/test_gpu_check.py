"""bench/gpu_check.sh, tried on the CPU: its dry run goes through every step at tiny sizes and writes the
report; without a GPU the real run stops at once, saying why; a step past its time limit is stopped."""

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
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402


def test_dry_run_goes_through_every_step_and_writes_the_report(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"} | {"PYTHON": sys.executable}
    # no practical time limit: the steps' limits are for the GPU run, and on a busy 2-core machine the tiny steps
    # take many minutes instead of the seconds of an idle one (about a minute in all)
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--dry_run", f"--out={tmp_path}", "--time_limit=36000"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("gpu_check: dry run") and "every step ran" in last, last
    report = (tmp_path / "gpu_check.md").read_text()
    figures = json.loads(re.search(r"```json\n(.*?)\n```", report, re.S).group(1))
    assert list(figures) == list(gpu_check.STEPS) and all(f["status"] == "ok" for f in figures.values())
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_cuda_the_real_run_stops_before_any_work_and_says_why():
    with pytest.raises(SystemExit, match="no CUDA GPU is visible.*--dry_run"):
        gpu_check.preflight(dry_run=False)


def test_a_step_past_its_time_limit_is_stopped_and_its_output_kept():
    t0 = time.perf_counter()
    code, out, _ = gpu_check.run([sys.executable, "-c", "print('started', flush=True); import time; time.sleep(60)"],
                                 limit_s=3, env=None)
    assert code is None and "started" in out
    assert time.perf_counter() - t0 < 30
