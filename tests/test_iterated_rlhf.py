"""The RM's early stopping and iterated RLHF (train_ppo.py --rounds), end to end on the tiny preset."""

import json

import pytest
import torch

import train_ppo
import train_rm
import train_sft
from minigpt_rlhf import iterated
from minigpt_rlhf.checkpoint import load_checkpoint, model_from_checkpoint
from minigpt_rlhf.common import compute_init
from minigpt_rlhf.comparisons import read_comparisons, split_comparisons
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.reward import heldout_loss
from minigpt_rlhf.tokenizer import get_tokenizer

pytestmark = pytest.mark.slow  # the tiny pipeline end to end


@pytest.fixture(scope="module")
def sft_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    train_sft.main(parse_config(train_sft.Config, ["--preset=tiny", f"--out_dir={out}", "--device=cpu"],
                                train_sft.PRESETS))
    return out


def test_rm_early_stopping_keeps_the_epoch_with_the_lowest_held_out_loss(sft_out):
    cfg = parse_config(train_rm.Config, ["--preset=tiny", f"--out_dir={sft_out}", "--device=cpu", "--epochs=4",
                                         "--early_stopping=True", "--lr=3e-3", "--max_prompts=16"], train_rm.PRESETS)
    train_rm.main(cfg)
    log = [json.loads(line) for line in (sft_out / "rm" / "log.jsonl").read_text().splitlines()]
    val = [row["val_loss"] for row in log if "val_loss" in row]
    # training stops after the first epoch that does not improve (or after the last epoch)
    assert all(a > b for a, b in zip(val, val[1:-1])) and (len(val) == 4 or val[-1] >= min(val[:-1]))
    # the saved RM is the best epoch's: undo the normalisation folded into its head, then recompute its loss
    tok = get_tokenizer()
    ckpt = load_checkpoint(sft_out / "rm" / "model.pt")
    rm = model_from_checkpoint(ckpt, tok).eval()
    with torch.no_grad():
        rm.lm_head.weight.div_(ckpt["reward_gain"])
        rm.lm_head.bias.div_(ckpt["reward_gain"]).add_(ckpt["reward_shift"])
    comparisons = read_comparisons(sft_out / "rm" / "comparisons.jsonl")
    _, held_out = split_comparisons(comparisons, cfg.val_fraction, cfg.seed)
    rt = compute_init("cpu", "float32")
    assert heldout_loss(rm, tok, held_out, rt) == pytest.approx(min(val), abs=1e-4)


def test_a_second_round_ranks_policy_samples_and_goes_on_training_the_rm(sft_out, monkeypatch):
    if not (sft_out / "rm" / "model.pt").exists():
        train_rm.main(parse_config(train_rm.Config, ["--preset=tiny", f"--out_dir={sft_out}", "--device=cpu"],
                                   train_rm.PRESETS))
    sampled_with = []
    collect = iterated.collect_comparisons

    def spy(model, *args, **kwargs):
        sampled_with.append(model)
        return collect(model, *args, **kwargs)

    monkeypatch.setattr(iterated, "collect_comparisons", spy)
    policies = []
    update = train_ppo.ppo_update

    after_update = []

    def spy_update(policy, *args, **kwargs):
        policies.append(policy)
        out = update(policy, *args, **kwargs)
        after_update.append({k: v.detach().clone() for k, v in policy.state_dict().items()})
        return out

    monkeypatch.setattr(train_ppo, "ppo_update", spy_update)
    cfg = parse_config(train_ppo.Config, ["--preset=tiny", f"--out_dir={sft_out}", "--device=cpu", "--iterations=4",
                                          "--rounds=2", "--round_prompts=6", "--ptx_coef=0"], train_ppo.PRESETS)
    train_ppo.main(cfg)
    assert len(sampled_with) == 1 and sampled_with[0] is policies[0]  # the policy PPO trains, not the SFT model

    log = [json.loads(line) for line in (sft_out / "ppo" / "log.jsonl").read_text().splitlines()]
    rounds = [row for row in log if "round" in row]
    assert [(r["round"], r["iteration"]) for r in rounds] == [(2, 2)]  # the second round starts at iteration 2
    ckpt = load_checkpoint(sft_out / "ppo" / "model.pt")
    new = ckpt["round_comparisons"]
    first = read_comparisons(sft_out / "rm" / "comparisons.jsonl")
    rm_cfg = load_checkpoint(sft_out / "rm" / "model.pt")["config"]
    train, held_out = split_comparisons(first, rm_cfg["val_fraction"], rm_cfg["seed"])
    assert 0 < len(new) <= 6 and rounds[0]["n_comparisons"] == len(train) + len(new)
    assert {c["prompt"] for c in new} <= {c["prompt"] for c in train}  # held-out prompts stay held out
    assert not {c["prompt"] for c in new} & {c["prompt"] for c in held_out}
    # the report's PPO_R1 column is the policy as round 1 left it: after iteration 1's update
    first = ckpt["first_round_policy"]
    assert first.keys() == after_update[1].keys() and all(torch.equal(first[k], after_update[1][k]) for k in first)
    assert any(not torch.equal(first[k], ckpt["model"][k]) for k in first)
    ev = json.loads((sft_out / "ppo" / "eval.json").read_text())
    assert "gold_score_ppo_round1" in ev and "win_rate_vs_ppo_round1" in ev
    rm0 = load_checkpoint(sft_out / "rm" / "model.pt")["model"]
    assert any(not torch.equal(rm0[k], v) for k, v in ckpt["reward_model"].items())  # the RM went on training


def test_later_rounds_without_the_rms_comparisons_are_a_clear_error_before_any_iteration(sft_out, tmp_path):
    import shutil

    from minigpt_rlhf.data import DataError

    if not (sft_out / "rm" / "model.pt").exists():
        train_rm.main(parse_config(train_rm.Config, ["--preset=tiny", f"--out_dir={sft_out}", "--device=cpu"],
                                   train_rm.PRESETS))
    for stage in ("base", "sft", "rm"):
        shutil.copytree(sft_out / stage, tmp_path / stage)
    rm_ckpt = load_checkpoint(tmp_path / "rm" / "model.pt")
    rm_ckpt["config"]["out_dir"] = str(tmp_path)  # the copied RM's comparisons are looked for here
    torch.save(rm_ckpt, tmp_path / "rm" / "model.pt")
    (tmp_path / "rm" / "comparisons.jsonl").unlink()
    cfg = parse_config(train_ppo.Config, ["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu", "--rounds=2"],
                       train_ppo.PRESETS)
    with pytest.raises(DataError, match="comparisons.jsonl: not found; --rounds=2 goes on training the RM"):
        train_ppo.main(cfg)
    assert not (tmp_path / "ppo" / "log.jsonl").exists()

