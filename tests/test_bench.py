"""Benchmark scripts run as commands at toy sizes, so that a change in what they drive shows here rather than
in a long benchmark run. (bench/rm_data.py: tests/test_pipeline.py; bench/gpu_check.sh: test_gpu_check.py.)"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each runs scripts end to end


def test_seed_spread_runs_the_whole_pipeline_per_seed_and_reports_mean_std_and_range(tmp_path):
    proc = subprocess.run([sys.executable, "bench/seeds.py", "--preset=tiny", "--seeds=1,2", f"--work_dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["seeds"] == [1, 2]
    # each seed is a pipeline of its own, from nothing: other SFT weights, trained with that seed
    sft = [torch.load(tmp_path / f"seed_{s}" / "sft" / "model.pt", weights_only=True) for s in (1, 2)]
    assert [c["config"]["seed"] for c in sft] == [1, 2]
    assert any(not torch.equal(sft[0]["model"][k], sft[1]["model"][k]) for k in sft[0]["model"])
    for s in (1, 2):
        run, ev = results["runs"][str(s)], json.loads((tmp_path / f"seed_{s}" / "ppo" / "eval.json").read_text())
        assert run["win_rate_vs_sft"] == ev["win_rate_vs_sft"] and run["kl_from_sft"] == ev["kl_from_sft"]
        assert run["win_rate_vs_sft_best_t"] == ev["win_rate_vs_sft_best_t"]
        rm = json.loads((tmp_path / f"seed_{s}" / "rm" / "eval.json").read_text())
        assert run["accuracy_vs_gold"] == rm["accuracy_vs_gold"]
        log = [json.loads(x) for x in (tmp_path / f"seed_{s}" / "ppo" / "log.jsonl").read_text().splitlines()]
        gold = [row["gold_score"] for row in log]  # tiny: 2 iterations, so the last one minus the first
        assert run["gold_rise"] == pytest.approx(gold[-1] - gold[0])
    for key in ("win_rate_vs_sft", "kl_from_sft", "wall_time_s"):
        values = [results["runs"][s][key] for s in ("1", "2")]
        sp = results["spread"][key]
        assert sp["mean"] == pytest.approx(np.mean(values)) and sp["std"] == pytest.approx(np.std(values, ddof=1))
        assert (sp["min"], sp["max"]) == (min(values), max(values))
    assert "| gold win rate of PPO over SFT |" in proc.stdout
