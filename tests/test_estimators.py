"""Critic-free advantage estimators (RLOO, GRPO, Dr. GRPO) and the update that uses them: each checked against
a hand computation or a brute-force loop."""

import math

import numpy as np
import pytest
import torch
from test_ppo_loop import PAD, PROMPTS, CountX, Tok, V, models

import train_ppo
from minigpt_rlhf import ppo
from minigpt_rlhf.common import compute_init, make_scaler
from minigpt_rlhf.rollout import compute_advantages, make_rollout
from minigpt_rlhf.sampling import banned_token_ids


def test_rloo_baseline_by_hand_for_two_and_four_samples():
    # k = 2: each sample's baseline is the other one
    assert ppo.rloo_advantages(torch.tensor([1.0, 3.0]), 2).tolist() == [-2.0, 2.0]
    # k = 4, two prompts: the baseline of sample i is the mean of the other three of its prompt
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 4.0, -4.0])
    expected = []
    for g in range(2):
        group = scores[4 * g: 4 * g + 4].tolist()
        for i, s in enumerate(group):
            others = [x for j, x in enumerate(group) if j != i]
            expected.append(s - sum(others) / 3)
    torch.testing.assert_close(ppo.rloo_advantages(scores, 4), torch.tensor(expected))
    assert ppo.rloo_advantages(scores, 4)[0].item() == pytest.approx(1 - 11 / 3)


@pytest.mark.parametrize("estimator", ["rloo", "grpo", "dr_grpo"])
def test_each_estimators_effective_kl_coefficient_is_measured_from_its_advantages(estimator):
    """How much the KL weighs against the score in the advantage the update sees: the last token's advantage moves
    by -beta per unit of its kl_t and by dA/ds per unit of the sample's score, so the effective coefficient is
    beta / (dA/ds), measured here by central differences on a sample at its group's mean (where GRPO's std does
    not move to first order), and compared with ppo.effective_kl_coef."""
    beta, k, i = 0.1, 3, 1
    scores = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)  # sample 1 is the group mean
    logprobs = torch.tensor([[-1.0, -2.0], [-1.5, -0.5], [-0.3, -0.7]], dtype=torch.float64)
    ref = torch.tensor([[-1.1, -1.9], [-1.4, -0.8], [-0.2, -0.9]], dtype=torch.float64)
    mask = torch.ones(3, 2, dtype=torch.float64)

    def last_advantage(s, lp):
        adv, _, _ = ppo.critic_free_advantages(estimator, s, lp, ref, mask, beta, k)
        return float(adv[i, -1])

    h = 1e-2  # the advantages are computed in float32
    ds, dlp = torch.zeros(3, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64)
    ds[i], dlp[i, -1] = h, h
    d_score = (last_advantage(scores + ds, logprobs) - last_advantage(scores - ds, logprobs)) / (2 * h)
    d_kl = (last_advantage(scores, logprobs + dlp) - last_advantage(scores, logprobs - dlp)) / (2 * h)
    assert d_kl == pytest.approx(-beta, rel=1e-4)  # the per-token penalty is the same for every estimator
    expected = ppo.effective_kl_coef(estimator, beta, k, group_std=float(scores.std()))
    assert -d_kl / d_score == pytest.approx(expected, rel=1e-3)
    by_hand = {"rloo": beta, "dr_grpo": beta * 3 / 2, "grpo": beta * (1 + 1e-4) * 3 / 2}  # the group's std is 1
    assert expected == pytest.approx(by_hand[estimator])


def test_grpo_and_dr_grpo_advantages_by_hand():
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0])
    mean, std = 3.0, math.sqrt((4 + 1 + 0 + 9) / 3)  # unbiased std of the group
    torch.testing.assert_close(ppo.grpo_advantages(scores, 4),
                               torch.tensor([(s - mean) / (std + 1e-4) for s in scores.tolist()]))
    torch.testing.assert_close(ppo.grpo_advantages(scores, 4, scale=False), torch.tensor([-2.0, -1.0, 0.0, 3.0]))


@pytest.mark.parametrize("estimator", ["rloo", "grpo", "dr_grpo"])
def test_a_group_of_equal_scores_has_zero_advantage_and_no_division_by_zero(estimator):
    scores = torch.tensor([0.7, 0.7, 0.7, 0.7, 1.0, 2.0, 3.0, 4.0])
    seq = {"rloo": lambda: ppo.rloo_advantages(scores, 4),
           "grpo": lambda: ppo.grpo_advantages(scores, 4),
           "dr_grpo": lambda: ppo.grpo_advantages(scores, 4, scale=False)}[estimator]()
    assert torch.isfinite(seq).all()
    assert seq[:4].abs().max().item() < 1e-6  # float rounding of 0.7 - mean only
    assert seq[4:].abs().sum() > 0


def test_groups_must_divide_the_batch():
    with pytest.raises(ValueError, match="groups of 3"):
        ppo.rloo_advantages(torch.zeros(8), 3)
    with pytest.raises(ValueError, match="k >= 2"):
        ppo.grpo_advantages(torch.zeros(4), 1)


@pytest.mark.parametrize("estimator", ["rloo", "grpo", "dr_grpo"])
def test_critic_free_advantages_are_the_group_advantage_plus_the_kl_penalty_to_go_and_honour_the_mask(estimator):
    torch.manual_seed(0)
    B, T, k, beta = 4, 6, 2, 0.3
    lengths = [6, 3, 1, 4]
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths])
    logprobs, ref = torch.randn(B, T), torch.randn(B, T)
    scores = torch.tensor([1.0, -1.0, 2.0, 5.0])
    # garbage at pads must not reach a valid token
    logprobs_garbage = torch.where(mask.bool(), logprobs, torch.tensor(float("nan")))
    adv, rewards, kl = ppo.critic_free_advantages(estimator, scores, logprobs_garbage, ref, mask, beta, k)
    seq = {"rloo": ppo.rloo_advantages(scores, k), "grpo": ppo.grpo_advantages(scores, k),
           "dr_grpo": ppo.grpo_advantages(scores, k, scale=False)}[estimator]
    for b in range(B):
        for t in range(T):
            if t >= lengths[b]:
                assert adv[b, t] == 0 and kl[b, t] == 0
                continue
            to_go = sum(-beta * (logprobs[b, u] - ref[b, u]).item() for u in range(t, lengths[b]))
            assert adv[b, t].item() == pytest.approx(seq[b].item() + to_go, abs=1e-5)
    assert torch.isfinite(adv).all()


def test_loss_aggregations_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    x_garbage = torch.where(mask.bool(), x, torch.tensor(1e6))
    assert ppo.aggregate_loss(x_garbage, mask, "token_mean").item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert ppo.aggregate_loss(x_garbage, mask, "seq_mean").item() == pytest.approx((2.0 + 4.0) / 2)
    assert ppo.aggregate_loss(x_garbage, mask, "token_sum", max_len=5).item() == pytest.approx(10 / (2 * 5))
    with pytest.raises(ValueError):
        ppo.aggregate_loss(x, mask, "token_sum")


def critic_free_setup(estimator, k=4):
    policy, ref, _ = models()
    cfg = train_ppo.Config(ppo_epochs=2, minibatch_size=4, lr=3e-3, max_new_tokens=8, kl_coef=0.01, temperature=1.0,
                           estimator=estimator, group_size=k, rounds=1)
    prompts = [p for p in PROMPTS[:4] for _ in range(k)]  # k consecutive copies of each prompt, as main builds them
    banned = banned_token_ids(V, V, PAD)
    r = make_rollout(policy, ref, CountX(), None, prompts, Tok, cfg.max_new_tokens, cfg.temperature,
                     cfg.no_eos_penalty, banned, cfg.minibatch_size, torch.Generator().manual_seed(0))
    return policy, cfg, banned, compute_advantages(r, cfg.kl_coef, cfg.gamma, cfg.lam, estimator, k)


@pytest.mark.parametrize("estimator", ["rloo", "grpo", "dr_grpo"])
def test_the_critic_free_update_has_ratio_one_on_its_first_minibatch_and_trains_only_the_policy(estimator):
    policy, cfg, banned, r = critic_free_setup(estimator)
    assert (r.values == 0).all()  # no value model scored the rollouts
    rt = compute_init("cpu", "float32")
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    before = [p.detach().clone() for p in policy.parameters()]
    stats = train_ppo.ppo_update(policy, None, opt, make_scaler(rt), r, cfg, banned, None, np.random.default_rng(0),
                                 rt, ptx_coef=0.0)
    assert stats["first_ratio_mean"] == 1.0 and stats["first_approx_kl"] == 0.0
    assert stats["vf_loss"] == 0.0 and "vf_clipfrac" not in stats
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_the_critic_free_update_raises_a_trivially_learnable_reward():
    """RLOO on the toy reward (number of X tokens): over 12 iterations the score must rise, as PPO's does in
    test_ppo_loop.py."""
    policy, ref, _ = models(seed=1)
    k = 4
    cfg = train_ppo.Config(ppo_epochs=4, minibatch_size=8, lr=1e-2, max_new_tokens=8, kl_coef=0.0, temperature=1.0,
                           estimator="rloo", group_size=k, rounds=1, no_eos_penalty=0.0)
    rt = compute_init("cpu", "float32")
    banned = banned_token_ids(V, V, PAD)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    prompts = [p for p in PROMPTS[:8] for _ in range(k)]

    def roll(seed):
        r = make_rollout(policy, ref, CountX(), None, prompts, Tok, cfg.max_new_tokens, cfg.temperature,
                         cfg.no_eos_penalty, banned, cfg.minibatch_size, torch.Generator().manual_seed(seed))
        return compute_advantages(r, cfg.kl_coef, cfg.gamma, cfg.lam, "rloo", k)

    first = float(roll(0).scores.mean())
    for it in range(12):
        train_ppo.ppo_update(policy, None, opt, make_scaler(rt), roll(it), cfg, banned, None,
                             np.random.default_rng(it), rt, ptx_coef=0.0)
    assert float(roll(99).scores.mean()) > first + 1.0
