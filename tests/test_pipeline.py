"""The three scripts end to end on the tiny preset: files, keys, checkpoints that load back, clear errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_ppo
import train_rm
import train_sft
from minigpt_rlhf import reward
from minigpt_rlhf.checkpoint import load_checkpoint, model_from_checkpoint
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.data import DataError
from minigpt_rlhf.tokenizer import get_tokenizer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # the tiny pipeline end to end


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    cfg = parse_config(train_ppo.Config, ["--preset=tiny", f"--out_dir={out}", "--device=cpu"], train_ppo.PRESETS)
    result = train_ppo.main(cfg)  # builds the SFT and RM stages first: their checkpoints are missing
    return out, result


def test_sft_stage_lowers_validation_loss_and_writes_eval(pipeline):
    out, _ = pipeline
    ev = json.loads((out / "sft" / "eval.json").read_text())
    for key in ("gold_score_mean", "gold_score_by_family", "eos_rate", "wall_time_s"):
        assert key in ev
    assert ev["sft_val_loss"] < ev["sft_val_loss_before"]
    assert 0.0 <= ev["gold_score_mean"] <= 1.0


def test_sft_checkpoint_loads_back_to_identical_outputs(pipeline):
    out, _ = pipeline
    tok = get_tokenizer()
    ckpt = load_checkpoint(out / "sft" / "model.pt")
    assert ckpt["stage"] == "sft" and ckpt["tokenizer"] == tok.identity()
    a = model_from_checkpoint(ckpt, tok).eval()
    b = model_from_checkpoint(load_checkpoint(out / "sft" / "model.pt"), tok).eval()
    x = torch.randint(0, tok.n_vocab, (2, 20))
    torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)


def test_rm_stage_writes_comparisons_and_eval(pipeline):
    out, _ = pipeline
    ev = json.loads((out / "rm" / "eval.json").read_text())
    for key in ("accuracy_vs_labels", "accuracy_vs_gold", "labeler_agreement", "spearman_vs_gold", "wall_time_s"):
        assert key in ev
    lines = (out / "rm" / "comparisons.jsonl").read_text().splitlines()
    for line in lines:
        row = json.loads(line)
        assert sorted(row["ranking"]) == list(range(len(row["responses"]))) and len(row["responses"]) >= 2
    assert load_checkpoint(out / "rm" / "model.pt")["model_config"]["head"] == "scalar"


def test_ppo_stage_writes_eval_with_the_documented_keys(pipeline):
    out, result = pipeline
    ev = json.loads((out / "ppo" / "eval.json").read_text())
    for key in ("win_rate_vs_sft", "win_rate_ci95", "gold_score_sft", "gold_score_ppo", "rm_score_sft",
                "rm_score_ppo", "kl_from_sft", "pretrain_loss_sft", "pretrain_loss_ppo", "wall_time_s"):
        assert key in ev
    lo, hi = ev["win_rate_ci95"]
    assert 0.0 <= lo <= ev["win_rate_vs_sft"] <= hi <= 1.0
    for key in ("win_rate_vs_base", "win_rate_vs_base_ci95", "ideal_rate_sft", "ideal_rate_ppo", "ideal_rate_base",
                "samples_per_prompt", "overoptimization"):
        assert key in ev or (out / "ppo" / f"{key}.json").exists()
    assert ev["samples_per_prompt"] == 4
    curve = json.loads((out / "ppo" / "overoptimization.json").read_text())
    assert len(curve["sqrt_kl"]) == len(curve["gold_score"]) == len(curve["rm_score"]) == 2
    log = [json.loads(line) for line in (out / "ppo" / "log.jsonl").read_text().splitlines()]
    # the tiny preset keeps the default's rounds: round 2 starts at iteration 1, logged on its line
    assert [(r["iteration"], r["round"]) for r in log if "round" in r] == [(1, 2)]
    for key in ("rm_train_accuracy", "n_comparisons", "rm_accuracy_vs_labels", "rm_accuracy_vs_gold", "round_s"):
        assert key in log[1]
    assert len(log) == 2 and log[0]["first_ratio_mean"] == 1.0
    for key in ("rm_score", "gold_score", "kl", "kl_k3", "kl_coef", "entropy", "clipfrac", "approx_kl", "vf_loss",
                "explained_variance", "response_len", "eos_rate", "tokens_per_s"):
        assert key in log[0]


def test_rm_with_val_comparisons_trains_on_all_comparisons_and_evaluates_on_the_given_file(pipeline, tmp_path):
    out, _ = pipeline
    lines = (out / "rm" / "comparisons.jsonl").read_text().splitlines()
    held, rest = lines[:3], lines[3:]
    (tmp_path / "train.jsonl").write_text("\n".join(rest) + "\n")
    (tmp_path / "val.jsonl").write_text("\n".join(held) + "\n")
    args = ["--preset=tiny", f"--out_dir={tmp_path}", f"--sft_checkpoint={out / 'sft' / 'model.pt'}",
            f"--comparisons={tmp_path / 'train.jsonl'}", f"--val_comparisons={tmp_path / 'val.jsonl'}"]
    result = train_rm.main(parse_config(train_rm.Config, args, train_rm.PRESETS))
    assert result["n_train_prompts"] == len(rest) and result["n_val_prompts"] == len(held)
    pairs = sum(len(json.loads(line)["responses"]) * (len(json.loads(line)["responses"]) - 1) // 2 for line in held)
    assert result["n_val_pairs"] == pairs
    # a held-out file that shares a prompt with the training file is refused, naming the option
    (tmp_path / "val.jsonl").write_text(rest[0] + "\n")
    with pytest.raises(DataError, match="--val_comparisons=.*1 of its prompts are also in the training"):
        train_rm.main(parse_config(train_rm.Config, args, train_rm.PRESETS))


def test_rm_without_sft_checkpoint_is_a_clear_error(tmp_path):
    cfg = parse_config(train_rm.Config, ["--preset=tiny", f"--out_dir={tmp_path}"], train_rm.PRESETS)
    with pytest.raises(FileNotFoundError, match="train_sft.py"):
        train_rm.main(cfg)


def test_unknown_option_is_a_clear_error():
    with pytest.raises(SystemExit, match="Did you mean --sft_steps"):
        parse_config(train_sft.Config, ["--sft_step=3"], train_sft.PRESETS)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(pipeline, monkeypatch):
    out, _ = pipeline
    before = (out / "sft" / "model.pt").read_bytes()
    monkeypatch.setattr(train_sft, "sft_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    cfg = parse_config(train_sft.Config, ["--preset=tiny", f"--out_dir={out}", f"--init_from={out}/base/model.pt"],
                       train_sft.PRESETS)
    with pytest.raises(DataError, match="sft: loss became nan at step 0"):
        train_sft.main(cfg)
    assert (out / "sft" / "model.pt").read_bytes() == before


def test_non_finite_rm_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(pipeline, monkeypatch):
    out, _ = pipeline
    before = (out / "rm" / "model.pt").read_bytes()

    def nan_loss(rewards, rankings, n_prompts=None):
        return rewards.sum() * float("nan"), {"n_correct_pairs": torch.tensor(0), "n_pairs": 1}

    monkeypatch.setattr(reward, "batched_kwise_ranking_loss", nan_loss)  # the loss of rm_step_loss
    cfg = parse_config(train_rm.Config, ["--preset=tiny", f"--out_dir={out}"], train_rm.PRESETS)
    with pytest.raises(DataError, match="rm: loss became nan at step 0"):
        train_rm.main(cfg)
    assert (out / "rm" / "model.pt").read_bytes() == before


def test_ppo_learning_rate_is_constant_by_default_and_annealed_linearly_with_anneal_lr(pipeline, tmp_path):
    out, _ = pipeline
    lr = train_ppo.Config().lr
    log = [json.loads(line) for line in (out / "ppo" / "log.jsonl").read_text().splitlines()]
    assert [row["lr"] for row in log] == [lr, lr]
    for stage in ("base", "sft", "rm"):  # the same upstream checkpoints, a PPO run of 3 iterations
        shutil.copytree(out / stage, tmp_path / stage)
    cfg = parse_config(train_ppo.Config, ["--preset=tiny", f"--out_dir={tmp_path}", "--iterations=3",
                                          "--anneal_lr=True", "--few_shot=0"], train_ppo.PRESETS)
    train_ppo.main(cfg)
    log = [json.loads(line) for line in (tmp_path / "ppo" / "log.jsonl").read_text().splitlines()]
    assert [row["lr"] for row in log] == pytest.approx([lr, lr * 2 / 3, lr / 3])  # lr * (3 - i) / 3


def test_bench_rm_data_collects_once_and_trains_one_rm_per_size_on_nested_subsets(pipeline, tmp_path):
    """bench/rm_data.py end to end at toy sizes (without --ppo), as a command: it drives collect_comparisons and
    train_rm.main directly, so a change of their signatures must show here rather than in a long benchmark run."""
    out, _ = pipeline
    proc = subprocess.run([sys.executable, "bench/rm_data.py", f"--out_dir={out}", f"--work_dir={tmp_path}",
                           "--pool=1300", "--n_val=6", "--sizes=4,8"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["train_prompts"] for r in results] == [4, 8]
    train = (tmp_path / "comparisons.jsonl").read_text().splitlines()
    assert (tmp_path / "size_4" / "comparisons.jsonl").read_text().splitlines() == train[:4]  # nested subsets
    assert (tmp_path / "size_8" / "comparisons.jsonl").read_text().splitlines() == train[:8]
    assert len((tmp_path / "val_comparisons.jsonl").read_text().splitlines()) == 6
    for r in results:
        assert 0.0 <= r["accuracy_vs_gold"] <= 1.0 and r["val_prompts"] == 6
        assert (tmp_path / f"size_{r['train_prompts']}" / "rm" / "model.pt").exists()


def test_non_finite_ppo_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(pipeline, monkeypatch):
    out, _ = pipeline
    before = (out / "ppo" / "model.pt").read_bytes()
    monkeypatch.setattr(train_ppo, "minibatch_loss",
                        lambda *a, **k: (torch.tensor(float("nan"), requires_grad=True), {}))
    cfg = parse_config(train_ppo.Config, ["--preset=tiny", f"--out_dir={out}"], train_ppo.PRESETS)
    with pytest.raises(DataError, match="ppo: loss became nan at iteration 0"):
        train_ppo.main(cfg)
    assert (out / "ppo" / "model.pt").read_bytes() == before


def test_the_report_compares_the_base_model_prompted_few_shot_and_counts_ideal_answers(tmp_path):
    """compare_models with a base model whose prompt carries demonstrations: its samples are those of the
    few-shot prompt, and each model's ideal rate is the share of its samples that score as the ideal answer."""
    from minigpt_rlhf.data import encode_prompt, few_shot_prompt
    from minigpt_rlhf.evaluate import compare_models, sample_responses
    from minigpt_rlhf.judge import Scorer
    from minigpt_rlhf.model import GPT, GPTConfig

    tok = get_tokenizer()
    torch.manual_seed(0)
    models = {name: GPT(GPTConfig(block_size=128, vocab_size=tok.n_vocab, n_layer=1, n_head=2, n_embd=32)).eval()
              for name in ("base", "sft", "ppo")}
    rows = [{"prompt": "Name a fruit."}, {"prompt": "Name a tree, please."}, {"prompt": "Say hi."}]
    demos = [{"prompt": "Name a colour.", "response": "Blue."}]
    judge = Scorer("len", lambda p, r: float(len(r) % 3), ideal_of=lambda p: "xx")  # ideal score 2
    encode = {"base": lambda p: few_shot_prompt(tok, p, demos, 80)}
    result, samples = compare_models(models, tok, rows, reference="sft", candidate="ppo", judge=judge,
                                     max_new_tokens=8, temperature=1.0, samples_per_prompt=2, seed=3,
                                     prompt_encoders=encode, ideal=judge.ideal_of)
    expanded = [r for r in rows for _ in range(2)]
    for name in models:  # each model sampled on its own input, with the same seed
        ref = sample_responses(models[name], tok, [{**r, "prompt_index": i // 2} for i, r in enumerate(expanded)],
                               8, 1.0, seed=3, encode=encode.get(name, lambda p: encode_prompt(tok, p)))
        assert [s["response_ids"] for s in samples[name]] == [s["response_ids"] for s in ref]
        scores = [len(s["response"]) % 3 for s in ref]
        assert result[f"ideal_rate_{name}"] == pytest.approx(sum(x >= 2 for x in scores) / len(scores))
    assert "win_rate_vs_base" in result and "win_rate_vs_base_ci95" in result


def test_the_sharpening_control_picks_its_temperature_on_ppo_prompts_never_on_the_held_out_ones(pipeline, tmp_path,
                                                                                               monkeypatch):
    """SFT at its best temperature is chosen on PPO prompts (by gold here), then judged on the held-out prompts
    like every other model: eval.json has its temperature, its win rate and CI, and the scores of the grid."""
    out, _ = pipeline
    for stage in ("base", "sft", "rm"):
        shutil.copytree(out / stage, tmp_path / stage)
    chosen_on, choose = [], train_ppo.best_temperature

    def spy(model, tok, rows, temperatures, **kwargs):
        chosen_on.extend(r["prompt"] for r in rows)
        return choose(model, tok, rows, temperatures, **kwargs)

    monkeypatch.setattr(train_ppo, "best_temperature", spy)
    cfg = parse_config(train_ppo.Config, ["--preset=tiny", f"--out_dir={tmp_path}", "--control_temperatures=0.2,1.5"],
                       train_ppo.PRESETS)
    result = train_ppo.main(cfg)
    held_out = {json.loads(line)["prompt"] for line in (ROOT / "data" / "eval_prompts.jsonl").open()}
    ppo_prompts = {json.loads(line)["prompt"] for line in (ROOT / "data" / "ppo_prompts.jsonl").open()}
    assert len(chosen_on) == cfg.control_prompts and set(chosen_on) <= ppo_prompts and not set(chosen_on) & held_out
    scores = result["sft_temperature_scores"]
    assert list(scores) == ["0.2", "1.5"]
    assert result["sft_best_temperature"] == max((0.2, 1.5), key=lambda t: (scores[f"{t:g}"], t))
    assert result["temperature_sft_best_t"] == result["sft_best_temperature"] and result["temperature_sft"] == 0.7
    lo, hi = result["win_rate_vs_sft_best_t_ci95"]
    assert lo <= result["win_rate_vs_sft_best_t"] <= hi
    saved = json.loads((tmp_path / "ppo" / "eval.json").read_text())
    assert saved["win_rate_vs_sft_best_t"] == result["win_rate_vs_sft_best_t"]
