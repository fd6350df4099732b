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
    new = read_comparisons(sft_out / "ppo" / "round_comparisons.jsonl")
    first = read_comparisons(sft_out / "rm" / "comparisons.jsonl")
    rm_cfg = load_checkpoint(sft_out / "rm" / "model.pt")["config"]
    train, held_out = split_comparisons(first, rm_cfg["val_fraction"], rm_cfg["seed"])
    assert 0 < len(new) <= 6 and rounds[0]["n_comparisons"] == len(train) + len(new)
    assert {c["prompt"] for c in new} <= {c["prompt"] for c in train}  # held-out prompts stay held out
    assert not {c["prompt"] for c in new} & {c["prompt"] for c in held_out}
    # the result is the policy and the value model; the rounds' RM is a checkpoint of its own
    ckpt = load_checkpoint(sft_out / "ppo" / "model.pt")
    assert {"model", "value_model"} <= ckpt.keys() and not {"reward_model", "round_comparisons", "kl_ctl"} & ckpt.keys()
    # the report's PPO_R1 column is the policy as round 1 left it: after iteration 1's update
    first = load_checkpoint(sft_out / "ppo" / "model_round1.pt")["model"]
    assert first.keys() == after_update[1].keys() and all(torch.equal(first[k], after_update[1][k]) for k in first)
    assert any(not torch.equal(first[k], ckpt["model"][k]) for k in first)
    ev = json.loads((sft_out / "ppo" / "eval.json").read_text())
    assert "gold_score_ppo_round1" in ev and "win_rate_vs_ppo_round1" in ev
    rm0 = load_checkpoint(sft_out / "rm" / "model.pt")["model"]
    rm1 = load_checkpoint(sft_out / "ppo" / "rm.pt")
    assert rm1["model_config"]["head"] == "scalar"
    assert any(not torch.equal(rm0[k], v) for k, v in rm1["model"].items())  # the RM went on training


def copy_upstream(sft_out, tmp_path) -> dict:
    """The tiny SFT model and RM copied to tmp_path, the RM's record pointing at the copied comparisons."""
    import shutil

    if not (sft_out / "rm" / "model.pt").exists():
        train_rm.main(parse_config(train_rm.Config, ["--preset=tiny", f"--out_dir={sft_out}", "--device=cpu"],
                                   train_rm.PRESETS))
    for stage in ("base", "sft", "rm"):
        shutil.copytree(sft_out / stage, tmp_path / stage)
    rm_ckpt = load_checkpoint(tmp_path / "rm" / "model.pt")
    rm_ckpt["rounds"]["comparisons"] = str(tmp_path / "rm" / "comparisons.jsonl")
    return rm_ckpt


def test_later_rounds_without_the_rms_comparisons_are_a_clear_error_before_any_iteration(sft_out, tmp_path):
    from minigpt_rlhf.data import DataError

    torch.save(copy_upstream(sft_out, tmp_path), tmp_path / "rm" / "model.pt")
    (tmp_path / "rm" / "comparisons.jsonl").unlink()
    cfg = parse_config(train_ppo.Config, ["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu", "--rounds=2"],
                       train_ppo.PRESETS)
    with pytest.raises(DataError, match="comparisons.jsonl: not found; the RM .* --rounds=2 goes on training"):
        train_ppo.main(cfg)
    assert not (tmp_path / "ppo").exists()


def test_later_rounds_read_the_rms_record_not_train_rms_config(sft_out, tmp_path):
    """PPO's rounds take what they need from the RM checkpoint's "rounds" record: with train_rm.py's saved Config
    emptied (as if every field had been renamed) the rounds run as before."""
    rm_ckpt = copy_upstream(sft_out, tmp_path)
    rm_ckpt["config"] = {}
    torch.save(rm_ckpt, tmp_path / "rm" / "model.pt")
    cfg = parse_config(train_ppo.Config, ["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu", "--rounds=2",
                                          "--report=False"], train_ppo.PRESETS)
    train_ppo.main(cfg)
    log = [json.loads(line) for line in (tmp_path / "ppo" / "log.jsonl").read_text().splitlines()]
    assert [row["round"] for row in log if "round" in row] == [2]
    del rm_ckpt["rounds"]  # an RM saved without the record: a clear error, before any work
    torch.save(rm_ckpt, tmp_path / "rm" / "model.pt")
    from minigpt_rlhf.data import DataError

    with pytest.raises(DataError, match="key 'rounds' missing.*--rounds=1"):
        train_ppo.main(cfg)
