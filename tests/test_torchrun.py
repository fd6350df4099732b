"""The three stages under `torchrun --nproc_per_node=2` (gloo on CPU): they finish, and rank 0 alone writes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun not installed")]


def torchrun(*args, script="train_ppo.py", nproc=2):
    # --standalone: torchrun picks a free port for the rendezvous itself (a port found here and passed on
    # could be taken by another process in between)
    cmd = [TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", script, "--preset=tiny", "--device=cpu", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def ppo_log(out):
    timing = {"tokens_per_s", "rollout_time_frac", "iteration_s", "round_s"}
    return [{k: v for k, v in json.loads(x).items() if k not in timing} for x in (out / "ppo" / "log.jsonl").open()]


def test_all_three_stages_run_under_torchrun_with_two_processes(tmp_path):
    proc = torchrun(f"--out_dir={tmp_path}")
    for stage in ("base", "sft", "rm", "ppo"):
        assert (tmp_path / stage / "model.pt").exists()
    # one writer: each log has exactly one line per step, not one per rank
    sft_steps = len((tmp_path / "sft" / "log.jsonl").read_text().splitlines())
    assert sft_steps == 20
    ppo_log = [json.loads(x) for x in (tmp_path / "ppo" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in ppo_log] == [0, 1]
    # rank 0 alone prints the final table
    assert proc.stdout.count("gold win rate of PPO over SFT:") == 1


def test_ppo_resumes_exactly_under_torchrun(tmp_path):
    """Both ranks' random streams are saved and restored: stopped after 1 of 3 iterations and resumed, the
    two-process run logs what a straight two-process run logs."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    torchrun(f"--out_dir={straight}", "--iterations=3")
    for stage in ("base", "sft", "rm"):
        shutil.copytree(straight / stage, resumed / stage)
    assert "stopped after iteration 1" in torchrun(f"--out_dir={resumed}", "--iterations=3", "--stop_at=1").stdout
    torchrun(f"--out_dir={resumed}", "--iterations=3", "--resume=True")
    assert len(ppo_log(straight)) == 3 and ppo_log(resumed) == ppo_log(straight)


def test_rlhf_rounds_under_torchrun_hold_the_same_comparisons_and_rm_on_every_rank(tmp_path):
    """The default's structure under torchrun: later rounds sample on both ranks, and every rank ends each round
    with the same comparisons (prompts, responses, rankings) and the same RM, bit for bit, so the RM's steps and
    all-reduces match and nothing waits forever."""
    proc = torchrun(f"--out_dir={tmp_path}", "--rounds=3", "--iterations=3", "--round_prompts=16",
                    script="tests/rounds_on_every_rank.py")
    assert [r["round"] for r in ppo_log(tmp_path) if "round" in r] == [2, 3]
    assert proc.stdout.count("round 3: ") == 1  # rank 0 alone reports
    import torch

    for n in (2, 3):
        held = [torch.load(tmp_path / f"rank{r}_round{n}.pt", weights_only=True) for r in (0, 1)]
        assert held[0]["comparisons"] and held[0]["comparisons"] == held[1]["comparisons"]
        assert held[0]["temperature"] == held[1]["temperature"]
        assert held[0]["rm"].keys() == held[1]["rm"].keys()
        assert all(torch.equal(held[0]["rm"][k], held[1]["rm"][k]) for k in held[0]["rm"])


def test_a_critic_free_estimator_with_rounds_under_torchrun_agrees_on_every_rank(tmp_path):
    """--estimator=grpo over two rounds on two processes: groups of the same prompt on each rank, no value model,
    and the round's comparisons and RM the same on both."""
    torchrun(f"--out_dir={tmp_path}", "--estimator=grpo", "--group_size=2", "--rounds=2", "--iterations=2",
             script="tests/rounds_on_every_rank.py")
    assert [r["round"] for r in ppo_log(tmp_path) if "round" in r] == [2]
    import torch

    held = [torch.load(tmp_path / f"rank{r}_round2.pt", weights_only=True) for r in (0, 1)]
    assert held[0]["comparisons"] == held[1]["comparisons"]
    assert all(torch.equal(held[0]["rm"][k], held[1]["rm"][k]) for k in held[0]["rm"])
    assert "value_model" not in torch.load(tmp_path / "ppo" / "model.pt", weights_only=True)


def test_dpo_on_two_processes_takes_the_steps_of_one(tmp_path):
    """train_dpo.py under torchrun: each rank takes whole prompts of a step and the gradients are averaged, so two
    processes end with the weights of one (float rounding aside), and rank 0 alone writes and reports."""
    torchrun(f"--out_dir={tmp_path}")  # the tiny SFT model and comparisons
    import torch

    from minigpt_rlhf.checkpoint import load_checkpoint

    weights = {}
    for n in (1, 2):
        out = tmp_path / f"dpo{n}"
        (out / "rm").mkdir(parents=True)
        shutil.copy(tmp_path / "rm" / "comparisons.jsonl", out / "rm" / "comparisons.jsonl")
        proc = torchrun(f"--out_dir={out}", f"--sft_checkpoint={tmp_path}/sft/model.pt", "--lr=1e-3",
                        "--prompts_per_batch=4", script="train_dpo.py", nproc=n)
        assert proc.stdout.count("gold win rate of DPO over SFT:") == 1
        log = [json.loads(x) for x in (out / "dpo" / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == list(range(len(log)))
        weights[n] = load_checkpoint(out / "dpo" / "model.pt")["model"]
    sft = load_checkpoint(tmp_path / "sft" / "model.pt")["model"]
    assert any(not torch.equal(weights[1][k], sft[k]) for k in sft)  # DPO moved the weights
    for k in weights[1]:
        torch.testing.assert_close(weights[2][k], weights[1][k], atol=2e-5, rtol=1e-4)
