"""Exact resume (minigpt_rlhf/resume.py): for each stage, N steps straight equal N/2 steps, a stop, a
resume and N/2 more: the same logged losses, step for step, and the same final weights, bit for bit.
Stops come from --stop_at and from a real SIGINT (Ctrl-C) delivered in the middle of training."""

import json
import os
import shutil
import signal

import pytest
import torch

import train_dpo
import train_ppo
import train_rm
import train_sft
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.data import DataError
from minigpt_rlhf.resume import resume_path

pytestmark = pytest.mark.slow  # each stage stopped and resumed, end to end

# wall-clock figures differ from run to run
TIMING_KEYS = {"tokens_per_s", "rollout_time_frac", "iteration_s", "round_s"}


def run(script, out, *args):
    cfg = parse_config(script.Config, ["--preset=tiny", f"--out_dir={out}", "--device=cpu", *args], script.PRESETS)
    return script.main(cfg)


def log_rows(path):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in open(path)]


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The reference: each stage run once without stopping (tiny preset: 20 pretraining steps, 20 SFT steps)."""
    out = tmp_path_factory.mktemp("straight")
    run(train_sft, out)
    run(train_rm, out, "--max_prompts=24", "--prompts_per_batch=2")  # 16 train prompts: 8 RM steps
    run(train_ppo, out, "--iterations=4")
    return out


def test_sft_stopped_in_pretraining_resumes_exactly(straight, tmp_path):
    result = run(train_sft, tmp_path, "--stop_at=10")
    assert result == {"interrupted": True, "phase": "pretrain"}
    assert os.path.exists(resume_path(tmp_path, "sft")) and not (tmp_path / "sft" / "model.pt").exists()
    assert len(log_rows(tmp_path / "base" / "log.jsonl")) == 10
    run(train_sft, tmp_path, "--resume=True")
    assert log_rows(tmp_path / "base" / "log.jsonl") == log_rows(straight / "base" / "log.jsonl")
    assert log_rows(tmp_path / "sft" / "log.jsonl") == log_rows(straight / "sft" / "log.jsonl")
    assert_same_weights(tmp_path / "sft" / "model.pt", straight / "sft" / "model.pt")
    assert not os.path.exists(resume_path(tmp_path, "sft"))  # a finished stage has nothing to resume


def test_sft_stopped_by_ctrl_c_in_sft_resumes_exactly(straight, tmp_path, monkeypatch):
    """A real SIGINT in the middle of SFT step 7 (counting from 0, after 20 pretraining steps)."""
    calls = {"n": 0}
    real = train_sft.clip_and_step

    def ctrl_c_at_sft_step_7(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 20 + 8:
            os.kill(os.getpid(), signal.SIGINT)  # the handler only sets a flag: the step finishes
        return real(*args, **kwargs)

    monkeypatch.setattr(train_sft, "clip_and_step", ctrl_c_at_sft_step_7)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    assert run(train_sft, tmp_path) == {"interrupted": True, "phase": "sft"}
    assert len(log_rows(tmp_path / "sft" / "log.jsonl")) == 8
    monkeypatch.setattr(train_sft, "clip_and_step", real)
    assert signal.getsignal(signal.SIGINT) is before  # the handler that was there was put back
    run(train_sft, tmp_path, "--resume=True")
    assert log_rows(tmp_path / "sft" / "log.jsonl") == log_rows(straight / "sft" / "log.jsonl")
    assert_same_weights(tmp_path / "sft" / "model.pt", straight / "sft" / "model.pt")


def copy_stage(src, dst, *names):
    for name in names:
        shutil.copytree(src / name, dst / name)


def test_rm_resumes_exactly(straight, tmp_path):
    copy_stage(straight, tmp_path, "base", "sft")
    (tmp_path / "rm").mkdir()
    for f in ("comparisons.jsonl", "labeler.json"):  # the saved comparisons are reused, as after a stop
        shutil.copy(straight / "rm" / f, tmp_path / "rm" / f)
    args = ["--max_prompts=24", "--prompts_per_batch=2"]
    assert run(train_rm, tmp_path, *args, "--stop_at=4") == {"interrupted": True, "steps_done": 4}
    assert not (tmp_path / "rm" / "model.pt").exists()
    run(train_rm, tmp_path, *args, "--resume=True")
    ref = log_rows(straight / "rm" / "log.jsonl")
    assert len([r for r in ref if "loss" in r]) == 8 and log_rows(tmp_path / "rm" / "log.jsonl") == ref
    assert_same_weights(tmp_path / "rm" / "model.pt", straight / "rm" / "model.pt")
    a = json.loads((tmp_path / "rm" / "eval.json").read_text())
    b = json.loads((straight / "rm" / "eval.json").read_text())
    assert a["accuracy_vs_labels"] == b["accuracy_vs_labels"] and a["reward_shift"] == b["reward_shift"]


def test_ppo_resumes_exactly(straight, tmp_path):
    copy_stage(straight, tmp_path, "base", "sft", "rm")
    assert run(train_ppo, tmp_path, "--iterations=4", "--stop_at=2")["iterations_done"] == 2
    # the result checkpoint of a stopped run holds what a finished one holds: the policy and the value model
    stopped = torch.load(tmp_path / "ppo" / "model.pt", weights_only=True)
    assert {"model", "value_model"} <= stopped.keys() and not {"kl_ctl", "reward_model", "optimizer"} & stopped.keys()
    state = torch.load(resume_path(tmp_path, "ppo"), weights_only=True)  # plain tensors and primitives only
    assert state["step"] == 2 and {"value_model", "optimizer", "kl_ctl", "rng"} <= state.keys()
    run(train_ppo, tmp_path, "--iterations=4", "--resume=True")
    ref = log_rows(straight / "ppo" / "log.jsonl")
    # the tiny preset's second round starts at iteration 2, where the run stopped: the resumed run collects it
    assert [(r["iteration"], r.get("round")) for r in ref] == [(0, None), (1, None), (2, 2), (3, None)]
    assert log_rows(tmp_path / "ppo" / "log.jsonl") == ref
    assert_same_weights(tmp_path / "ppo" / "model.pt", straight / "ppo" / "model.pt")
    a = json.loads((tmp_path / "ppo" / "eval.json").read_text())
    b = json.loads((straight / "ppo" / "eval.json").read_text())
    assert a["win_rate_vs_sft"] == b["win_rate_vs_sft"] and a["kl_from_sft"] == b["kl_from_sft"]


def test_resume_without_a_saved_state_is_a_clear_error(straight):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run(train_ppo, straight, "--iterations=4", "--resume=True")


def test_rm_cannot_resume_and_relabel(straight):
    with pytest.raises(DataError, match="cannot --relabel"):
        run(train_rm, straight, "--resume=True", "--relabel=True")


def test_train_ppo_resume_continues_an_upstream_stage_stopped_midway(straight, tmp_path, monkeypatch):
    """Ctrl-C while `python train_ppo.py` is still building the SFT stage; then `train_ppo.py --resume=True`
    finishes SFT exactly, builds the RM and runs PPO from its start."""
    calls = {"n": 0}
    real = train_sft.clip_and_step

    def ctrl_c_at_pretraining_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_sft, "clip_and_step", ctrl_c_at_pretraining_step_5)
    assert run(train_ppo, tmp_path, "--iterations=1")["interrupted"]
    assert os.path.exists(resume_path(tmp_path, "sft")) and not (tmp_path / "rm").exists()
    monkeypatch.setattr(train_sft, "clip_and_step", real)
    result = run(train_ppo, tmp_path, "--iterations=1", "--resume=True")
    assert "win_rate_vs_sft" in result
    assert log_rows(tmp_path / "base" / "log.jsonl") == log_rows(straight / "base" / "log.jsonl")
    assert_same_weights(tmp_path / "sft" / "model.pt", straight / "sft" / "model.pt")


def test_resuming_with_other_settings_warns_and_names_them(straight, tmp_path, capsys):
    copy_stage(straight, tmp_path, "base", "sft")
    (tmp_path / "rm").mkdir()
    for f in ("comparisons.jsonl", "labeler.json"):
        shutil.copy(straight / "rm" / f, tmp_path / "rm" / f)
    args = ["--max_prompts=24", "--prompts_per_batch=2"]
    run(train_rm, tmp_path, *args, "--stop_at=4")
    capsys.readouterr()
    run(train_rm, tmp_path, *args, "--resume=True", "--lr=1e-3")
    out = capsys.readouterr().out
    assert "warning: resuming with settings that differ" in out and "lr: 0.0003 -> 0.001" in out
    assert "stop_at" not in out.split("warning:")[1].splitlines()[0]  # run-control flags may change freely


def test_a_critic_free_ppo_run_resumes_exactly(straight, tmp_path):
    """Its resume state has no value model (none was built), and resuming gives the straight run's log and weights."""
    for out in (tmp_path / "a", tmp_path / "b"):
        copy_stage(straight, out, "base", "sft", "rm")
    run(train_ppo, tmp_path / "a", "--iterations=4", "--estimator=rloo", "--report=False")
    assert run(train_ppo, tmp_path / "b", "--iterations=4", "--estimator=rloo", "--stop_at=2")["iterations_done"] == 2
    state = torch.load(resume_path(tmp_path / "b", "ppo"), weights_only=True)
    assert state["step"] == 2 and "value_model" not in state and "kl_ctl" in state
    run(train_ppo, tmp_path / "b", "--iterations=4", "--estimator=rloo", "--resume=True", "--report=False")
    assert log_rows(tmp_path / "b" / "ppo" / "log.jsonl") == log_rows(tmp_path / "a" / "ppo" / "log.jsonl")
    assert_same_weights(tmp_path / "b" / "ppo" / "model.pt", tmp_path / "a" / "ppo" / "model.pt")
    # a critic-free state cannot resume PPO with a value model: a clear error before any work
    run(train_ppo, tmp_path / "b", "--iterations=4", "--estimator=rloo", "--stop_at=2")
    with pytest.raises(DataError, match="holds no value model"):
        run(train_ppo, tmp_path / "b", "--iterations=4", "--resume=True")


def test_dpo_resumes_exactly(straight, tmp_path):
    for out in (tmp_path / "a", tmp_path / "b"):
        copy_stage(straight, out, "sft", "rm")
    run(train_dpo, tmp_path / "a", "--report=False", "--prompts_per_batch=2", "--epochs=2")
    assert run(train_dpo, tmp_path / "b", "--report=False", "--prompts_per_batch=2", "--epochs=2",
               "--stop_at=3")["steps_done"] == 3
    assert torch.load(resume_path(tmp_path / "b", "dpo"), weights_only=True)["step"] == 3
    run(train_dpo, tmp_path / "b", "--report=False", "--prompts_per_batch=2", "--epochs=2", "--resume=True")
    drop = {"elapsed_s", "step_s", "reference_s"}
    rows = [[{k: v for k, v in r.items() if k not in drop} for r in log_rows(out / "dpo" / "log.jsonl")]
            for out in (tmp_path / "a", tmp_path / "b")]
    assert len(rows[0]) > 3 and rows[1] == rows[0]
    assert_same_weights(tmp_path / "b" / "dpo" / "model.pt", tmp_path / "a" / "dpo" / "model.pt")
    assert not (tmp_path / "b" / "dpo" / "resume.pt").exists()  # a finished run has nothing left to resume
