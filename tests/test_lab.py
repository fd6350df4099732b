"""The laboratory end to end on the tiny preset: every method trains and is judged, the tables and the files,
the critic-free runs build no value model, DPO's own report, and the same numbers on a second run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lab
import train_dpo
import train_ppo
from minigpt_rlhf.checkpoint import load_checkpoint
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.data import DataError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab_out")
    cfg = parse_config(lab.Config, ["--preset=tiny", f"--out_dir={out}", "--device=cpu"], lab.PRESETS)
    return out, lab.main(cfg)  # builds out/sft and out/rm first


def test_every_method_has_a_row_per_setting_judged_against_the_same_sft(tiny_lab):
    out, results = tiny_lab
    saved = json.loads((out / "lab" / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(results["rows"]))
    settings = {(r["method"], r["setting"]) for r in saved["rows"]}
    assert settings == {(m, f"it={i}") for m in ("ppo", "rloo", "grpo", "dr_grpo") for i in (1, 2)} | \
        {("dpo", "step=1"), ("dpo", "step=2"), ("best_of_n", "n=2"), ("sharpening", "T=0.3")}
    for r in saved["rows"]:
        lo, hi = r["win_ci95"]
        assert 0 <= lo <= r["win"] <= hi <= 1 and 0 <= r["gold"] <= 1 and r["sqrt_kl"] >= 0
    bon = next(r for r in saved["rows"] if r["method"] == "best_of_n")
    assert bon["kl_bound"] == pytest.approx(0.6931 - 0.5, abs=1e-4)  # log 2 - 1/2
    assert 0 <= bon["kl"] <= bon["kl_bound"]  # measured from the draws (tests/test_frontier.py: by brute force)
    ppo2 = next(r for r in saved["rows"] if r["setting"] == "it=2" and r["method"] == "ppo")
    ppo1 = next(r for r in saved["rows"] if r["setting"] == "it=1" and r["method"] == "ppo")
    assert ppo2["train_s"] > ppo1["train_s"] > 0
    for key in ("matched_sqrt_kl", "matched_train_s", "cost", "sft"):
        assert key in saved
    assert set(saved["cost"]["rloo"]) >= {"s_per_iteration", "train_s", "peak_memory_mb"}
    assert (out / "lab" / "report.txt").read_text().count("gold @") >= 2
    pytest.importorskip("matplotlib")
    assert (out / "lab" / "frontier.png").stat().st_size > 0


def test_a_critic_free_run_builds_and_saves_no_value_model(tiny_lab):
    out, _ = tiny_lab
    run = out / "lab" / "runs"
    assert "value_model" not in load_checkpoint(run / "rloo" / "ppo" / "model.pt")
    assert "value_model" in load_checkpoint(run / "ppo" / "ppo" / "model.pt")
    for method in ("rloo", "grpo", "dr_grpo"):
        log = [json.loads(line) for line in (run / method / "ppo" / "log.jsonl").read_text().splitlines()]
        assert log[0]["first_ratio_mean"] == 1.0 and "explained_variance" not in log[0]
    ppo_log = json.loads((run / "ppo" / "ppo" / "log.jsonl").read_text().splitlines()[0])
    assert "explained_variance" in ppo_log


def test_the_report_puts_every_kl_coefficient_in_one_unit(tiny_lab):
    """PPO's beta weighs the KL against the normalised RM score g * (r - b); DPO's against the RM's own logits r.
    In logit units PPO's is beta / g; Dr. GRPO's baseline shrinks the score's weight by (k - 1)/k."""
    out, results = tiny_lab
    coef = results["kl_coefficients"]
    gain = load_checkpoint(out / "rm" / "model.pt")["reward_gain"]
    beta, k = train_ppo.Config.kl_coef, lab.Config.group_size
    assert coef["rm_gain"] == pytest.approx(gain)
    assert coef["ppo"]["in_logit_units"] == pytest.approx(beta / gain) == coef["rloo"]["in_logit_units"]
    assert coef["dr_grpo"]["effective_vs_rm_score"] == pytest.approx(beta * k / (k - 1))
    assert coef["dpo"]["in_logit_units"] == train_dpo.Config.beta
    assert coef["dpo"]["effective_vs_rm_score"] == pytest.approx(train_dpo.Config.beta * gain)
    assert "KL coefficients in one unit" in (out / "lab" / "report.txt").read_text()


def test_every_methods_training_seconds_are_its_steps_alone(tiny_lab):
    """One accounting for every method: the seconds of its training steps (PPO's and the critic-free ones'
    rollout, advantages and update; DPO's steps and its one reference pass), summed from its first step, never
    the evaluation, judging or logging between them."""
    out, results = tiny_lab
    run = out / "lab" / "runs"
    rows = {(r["method"], r["setting"]): r for r in results["rows"]}
    for method in ("ppo", "rloo", "grpo", "dr_grpo"):
        log = [json.loads(line) for line in (run / method / "ppo" / "log.jsonl").read_text().splitlines()]
        assert rows[(method, "it=2")]["train_s"] == pytest.approx(sum(r["iteration_s"] for r in log[:2]))
        assert rows[(method, "it=1")]["train_s"] == pytest.approx(log[0]["iteration_s"])
    log = [json.loads(line) for line in (run / "dpo" / "dpo" / "log.jsonl").read_text().splitlines()]
    assert rows[("dpo", "step=2")]["train_s"] == pytest.approx(log[0]["reference_s"] + log[0]["step_s"]
                                                               + log[1]["step_s"])
    assert rows[("dpo", "step=2")]["train_s"] < log[1]["elapsed_s"]  # the wall clock includes loading and evaluation


def test_ppo_iteration_seconds_leave_out_the_judges_scores(tiny_lab, tmp_path, monkeypatch):
    """The clock jumps 100 s at every call of the judge: the 8 rollouts judged for each iteration's log would add
    800 s to iteration_s if it counted them. It does not; the round's judged held-out responses go to round_s."""
    import time

    out, _ = tiny_lab
    for stage in ("sft", "rm"):
        shutil.copytree(out / stage, tmp_path / stage)
    (tmp_path / "slow_judge.py").write_text("import time\n\ndef score(prompt, response):\n"
                                           "    time.judge_calls = getattr(time, 'judge_calls', 0) + 1\n"
                                           "    return len(response) / 100\n")
    real = time.time
    monkeypatch.setattr(time, "judge_calls", 0, raising=False)
    monkeypatch.setattr(time, "time", lambda: real() + 100.0 * time.judge_calls)
    cfg = parse_config(train_ppo.Config, ["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu", "--report=False",
                                          f"--judge={tmp_path / 'slow_judge.py'}:score", "--few_shot=0"],
                       train_ppo.PRESETS)
    train_ppo.main(cfg)
    log = [json.loads(line) for line in (tmp_path / "ppo" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all("gold_score" in r for r in log) and time.judge_calls >= 16
    assert all(r["iteration_s"] < 100 for r in log)
    assert log[1]["round_s"] >= 100 and "round_s" not in log[0]


def test_the_lab_repeats_its_numbers_on_a_second_run(tiny_lab, tmp_path):
    out, results = tiny_lab
    for stage in ("sft", "rm"):
        shutil.copytree(out / stage, tmp_path / stage)
    cfg = parse_config(lab.Config, ["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu"], lab.PRESETS)
    again = lab.main(cfg)
    timing = ("train_s", "inference_s")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in results["rows"]]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in again["rows"]]


def test_train_dpo_reports_as_the_other_stages_do(tiny_lab):
    out, _ = tiny_lab
    cfg = parse_config(train_dpo.Config, ["--preset=tiny", f"--out_dir={out}", "--device=cpu"], train_dpo.PRESETS)
    result = train_dpo.main(cfg)
    ev = json.loads((out / "dpo" / "eval.json").read_text())
    for key in ("win_rate_vs_sft", "win_rate_ci95", "gold_score_dpo", "rm_score_dpo", "kl_from_sft", "val_accuracy",
                "val_loss"):
        assert key in ev, key
    assert ev["win_rate_vs_sft"] == result["win_rate_vs_sft"]
    log = [json.loads(line) for line in (out / "dpo" / "log.jsonl").read_text().splitlines()]
    # at step 0 the policy is the reference: every implicit reward is 0, so the loss is log 2
    assert log[0]["loss"] == pytest.approx(0.6931, abs=1e-3) and log[0]["margin"] == pytest.approx(0.0, abs=1e-5)
    ckpt = load_checkpoint(out / "dpo" / "model.pt")
    assert ckpt["stage"] == "dpo" and torch.is_tensor(next(iter(ckpt["model"].values())))


@pytest.mark.parametrize("args, message", [
    (["--methods=ppo,sft2"], "sft2"),
    (["--snapshots=5"], "--snapshots=5"),
    (["--best_of=1"], "--best_of=1"),
    (["--dpo_snapshots=0"], "--dpo_snapshots=0"),
])
def test_bad_lab_options_are_clear_errors_before_any_run(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "lab.py", "--preset=tiny", f"--out_dir={tmp_path}", *args], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "sft").exists()  # nothing was trained


@pytest.mark.parametrize("args, message", [
    (["--estimator=ppo2"], "--estimator='ppo2'"),
    (["--estimator=rloo", "--group_size=3"], "--group_size=3"),
    (["--estimator=grpo", "--group_size=1"], "--group_size=1"),
    (["--snapshots=3"], "--snapshots=3"),
])
def test_bad_estimator_options_are_clear_errors(tmp_path, args, message):
    cfg = parse_config(train_ppo.Config, ["--preset=tiny", f"--out_dir={tmp_path}", *args], train_ppo.PRESETS)
    with pytest.raises(DataError, match=message.replace("[", r"\[")):
        train_ppo.main(cfg)
    assert not (tmp_path / "sft").exists()


def test_train_ppo_with_a_critic_free_estimator_never_builds_a_value_model(tiny_lab, tmp_path, monkeypatch):
    out, _ = tiny_lab
    for stage in ("sft", "rm"):
        shutil.copytree(out / stage, tmp_path / stage)
    built = []
    real = train_ppo.load_model

    def recording(ckpt, tok, where, device, trainable=False):
        built.append((ckpt["model_config"]["head"], trainable))
        return real(ckpt, tok, where, device, trainable)

    monkeypatch.setattr(train_ppo, "load_model", recording)
    cfg = parse_config(train_ppo.Config, ["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu", "--estimator=grpo",
                                          "--report=False", "--few_shot=0"], train_ppo.PRESETS)
    train_ppo.main(cfg)
    # policy (lm, trained), reference (lm, frozen), RM (scalar, frozen): no trained scalar model
    assert sorted(built) == [("lm", False), ("lm", True), ("scalar", False)]
    assert "value_model" not in load_checkpoint(tmp_path / "ppo" / "model.pt")


def test_a_critic_free_estimator_runs_iterated_rlhf(tiny_lab, tmp_path):
    """--rounds retrains the RM between rounds and leaves the update alone: RLOO over two rounds runs, the second
    round's RM is saved, and no value model is."""
    out, _ = tiny_lab
    for stage in ("sft", "rm"):
        shutil.copytree(out / stage, tmp_path / stage)
    cfg = parse_config(train_ppo.Config, ["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu", "--estimator=rloo",
                                          "--rounds=2", "--iterations=2", "--round_prompts=4", "--few_shot=0"],
                       train_ppo.PRESETS)
    result = train_ppo.main(cfg)
    log = [json.loads(line) for line in (tmp_path / "ppo" / "log.jsonl").read_text().splitlines()]
    assert [r["round"] for r in log if "round" in r] == [2]
    ckpt = load_checkpoint(tmp_path / "ppo" / "model.pt")
    assert "value_model" not in ckpt and (tmp_path / "ppo" / "rm.pt").exists()
    assert "win_rate_vs_ppo_round1" in result
