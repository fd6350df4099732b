"""The PPO math of minigpt_rlhf.ppo, each rule checked against a hand computation or a plain loop."""

import math
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from minigpt_rlhf.ppo import (
    AdaptiveKLController,
    FixedKLController,
    annealed_lr,
    entropy_from_logits,
    explained_variance,
    gae,
    k3_kl,
    kl_penalized_rewards,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    value_loss,
)
from minigpt_rlhf.reward import last_token_index

# ----------------------------------------------------------------------------------------------------
# rewards


def test_last_token_index_is_last_valid_position_even_for_non_prefix_masks():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 0, 3, -1]


def test_kl_penalized_rewards_put_score_on_eos_and_nothing_on_pads():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, -1.5], [-0.2, -0.3, -0.4, -0.9]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.5, -2.0], [-0.1, -0.5, -0.4, 5.0]])
    response_mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])  # row 1 ends early
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = kl_penalized_rewards(logprobs, ref_logprobs, scores, response_mask, kl_coef=0.1)
    # kl = logprobs - ref_logprobs on valid tokens, 0 on pads
    expected_kl = torch.tensor([[0.5, -1.0, 0.0, 0.5], [-0.1, 0.2, 0.0, 0.0]])
    # -0.1 * kl, plus the score on the last valid token (position 3 of row 0, position 1 of row 1)
    expected_rewards = torch.tensor([[-0.05, 0.1, 0.0, -0.05 + 2.0], [0.01, -0.02 - 1.0, 0.0, 0.0]])
    torch.testing.assert_close(kl, expected_kl)
    torch.testing.assert_close(rewards, expected_rewards)


def test_kl_penalized_rewards_row_without_valid_tokens_gets_nothing():
    logprobs = torch.tensor([[-1.0, -2.0], [-1.0, -2.0]])
    ref_logprobs = torch.zeros(2, 2)
    response_mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    rewards, kl = kl_penalized_rewards(logprobs, ref_logprobs, torch.tensor([3.0, 5.0]), response_mask, 0.5)
    torch.testing.assert_close(rewards, torch.tensor([[0.5 + 3.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(kl, torch.tensor([[-1.0, 0.0], [0.0, 0.0]]))


def test_k3_is_nonnegative_and_equals_formula():
    g = torch.Generator().manual_seed(0)
    logprobs = torch.randn(3, 6, generator=g)
    ref_logprobs = torch.randn(3, 6, generator=g)
    mask = torch.tensor([[1.0] * 6, [1.0] * 3 + [0.0] * 3, [0.0] * 6])
    k3 = k3_kl(logprobs, ref_logprobs, mask)
    assert (k3 >= 0).all()
    for b in range(3):
        for t in range(6):
            kl = logprobs[b, t].item() - ref_logprobs[b, t].item()
            expected = math.exp(-kl) - 1 + kl if mask[b, t] else 0.0
            assert k3[b, t].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------------------------------
# GAE


def reference_gae(rewards, values, lengths, gamma, lam):
    """Textbook GAE per row over the first `length` tokens, with plain Python floats."""
    B, T = len(rewards), len(rewards[0])
    advantages = [[0.0] * T for _ in range(B)]
    for b in range(B):
        L = lengths[b]
        next_advantage = 0.0
        for t in reversed(range(L)):
            next_value = values[b][t + 1] if t + 1 < L else 0.0
            delta = rewards[b][t] + gamma * next_value - values[b][t]
            next_advantage = delta + gamma * lam * next_advantage
            advantages[b][t] = next_advantage
    returns = [[advantages[b][t] + values[b][t] if t < lengths[b] else 0.0 for t in range(T)] for b in range(B)]
    return advantages, returns


def test_gae_hand_worked_three_tokens():
    # rewards [0, 0, 1], values [0.5, 0.6, 0.7], gamma = 1, lam = 0.5, then one pad
    # t=2: delta = 1 + 0 - 0.7 = 0.3                  A_2 = 0.3
    # t=1: delta = 0 + 0.7 - 0.6 = 0.1                A_1 = 0.1 + 0.5 * 0.3  = 0.25
    # t=0: delta = 0 + 0.6 - 0.5 = 0.1                A_0 = 0.1 + 0.5 * 0.25 = 0.225
    # returns = A + V = [0.725, 0.85, 1.0]
    rewards = torch.tensor([[0.0, 0.0, 1.0, 9.0]])
    values = torch.tensor([[0.5, 0.6, 0.7, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[0.225, 0.25, 0.3, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.725, 0.85, 1.0, 0.0]]))


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8)])
def test_gae_matches_reference_loop(gamma, lam):
    g = torch.Generator().manual_seed(1)
    B, T = 6, 9
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = [9, 1, 5, 0, 8, 3]
    mask = torch.tensor([[1.0] * L + [0.0] * (T - L) for L in lengths], dtype=torch.float64)
    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)
    ref_adv, ref_ret = reference_gae(rewards.tolist(), values.tolist(), lengths, gamma, lam)
    torch.testing.assert_close(advantages, torch.tensor(ref_adv, dtype=torch.float64))
    torch.testing.assert_close(returns, torch.tensor(ref_ret, dtype=torch.float64))
    assert (advantages[mask == 0] == 0).all() and (returns[mask == 0] == 0).all()


def test_gae_pads_do_not_leak_into_valid_tokens():
    g = torch.Generator().manual_seed(2)
    rewards = torch.randn(3, 6, generator=g)
    values = torch.randn(3, 6, generator=g)
    mask = torch.tensor([[1.0] * 6, [1.0] * 4 + [0.0] * 2, [1.0] * 2 + [0.0] * 4])
    advantages, returns = gae(rewards, values, mask)
    pad = mask == 0
    rewards2 = torch.where(pad, torch.randn(3, 6, generator=g) * 100, rewards)
    values2 = torch.where(pad, torch.full_like(values, float("nan")), values)
    advantages2, returns2 = gae(rewards2, values2, mask)
    torch.testing.assert_close(advantages2, advantages)
    torch.testing.assert_close(returns2, returns)
    assert (advantages[pad] == 0).all()


def test_gae_zero_inside_a_row_ends_the_episode_before_it():
    # mask [1, 0, 1], gamma = lam = 1: token 0 sees V = 0 and A = 0 after it, as at the end of a row
    rewards = torch.tensor([[1.0, 5.0, 2.0]])
    values = torch.tensor([[0.5, 7.0, 0.25]])
    advantages, returns = gae(rewards, values, torch.tensor([[1.0, 0.0, 1.0]]), gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[1.0 - 0.5, 0.0, 2.0 - 0.25]]))
    torch.testing.assert_close(returns, torch.tensor([[1.0, 0.0, 2.0]]))


def test_gae_has_no_gradient():
    values = torch.randn(2, 3, requires_grad=True)
    advantages, returns = gae(torch.randn(2, 3), values, torch.ones(2, 3))
    assert not advantages.requires_grad and not returns.requires_grad


# ----------------------------------------------------------------------------------------------------
# whitening


def test_masked_whiten_gives_mean_0_std_1_over_valid_tokens():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 7, generator=g, dtype=torch.float64) * 3 + 5
    lengths = [7, 2, 5, 0]
    mask = torch.tensor([[1.0] * L + [0.0] * (7 - L) for L in lengths], dtype=torch.float64)
    out = masked_whiten(x, mask)
    valid = x.numpy()[mask.numpy() == 1]
    expected = (valid - valid.mean()) / valid.std()  # numpy std: ddof=0
    np.testing.assert_allclose(out.numpy()[mask.numpy() == 1], expected, rtol=1e-6)
    assert (out[mask == 0] == 0).all()
    # pads do not influence anything, even when they are garbage
    x2 = torch.where(mask == 0, torch.full_like(x, float("inf")), x)
    torch.testing.assert_close(masked_whiten(x2, mask), out)
    # shift_mean=False only rescales: mean stays, std becomes 1
    unshifted = masked_whiten(x, mask, shift_mean=False).numpy()[mask.numpy() == 1]
    np.testing.assert_allclose(unshifted, expected + valid.mean(), rtol=1e-6)


def test_masked_mean_and_var_ignore_pads():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, float("nan"), float("inf")]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    assert masked_var(x, mask).item() == pytest.approx(2.0 / 3.0)  # ((1-2)^2 + 0 + (3-2)^2) / 3
    assert masked_var(x, mask, unbiased=True).item() == pytest.approx(1.0)
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 3.0]))


def _whiten_worker(rank, world_size, init_file, x, mask, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        rows = slice(rank * x.shape[0] // world_size, (rank + 1) * x.shape[0] // world_size)
        x_local, mask_local = x[rows], mask[rows]
        out = {
            "whitened": masked_whiten(x_local, mask_local, all_ranks=True),
            "mean": masked_mean(x_local, mask_local, all_ranks=True),
            "local_mean": masked_mean(x_local, mask_local),
        }
        try:
            masked_mean(x_local.clone().requires_grad_(), mask_local, all_ranks=True)
            out["raised_on_grad"] = False
        except RuntimeError:
            out["raised_on_grad"] = True
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is unavailable",
)
def test_masked_whiten_across_ranks_equals_whitening_the_union():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64)
    # the two halves have different numbers of valid tokens, so a mean of means would be wrong
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.float64)
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_whiten_worker, args=(2, os.path.join(tmp, "init"), x, mask, tmp), nprocs=2, join=True)
        results = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(2)]
    expected = masked_whiten(x, mask)
    torch.testing.assert_close(torch.cat([r["whitened"] for r in results]), expected)
    for r, rows in zip(results, (slice(0, 2), slice(2, 4))):
        torch.testing.assert_close(r["mean"], masked_mean(x, mask))
        torch.testing.assert_close(r["local_mean"], masked_mean(x[rows], mask[rows]))
        assert r["raised_on_grad"]


# ----------------------------------------------------------------------------------------------------
# policy and value losses


def test_policy_loss_gradient_is_zero_exactly_where_clipped():
    eps = 0.2
    # token: 0: A>0, ratio 1.5 (clipped)  1: A<0, ratio 0.5 (clipped)
    #        2: A>0, ratio 1.1 (inside)   3: A<0, ratio 1.5 (outside the range but NOT clipped:
    #        the unclipped term is the larger loss)   4: pad with garbage
    ratios = [1.5, 0.5, 1.1, 1.5]
    advantages = torch.tensor([[1.0, -1.0, 1.0, -2.0, 7.0]])
    old_logprobs = torch.tensor([[-1.0, -2.0, -0.5, -1.0, float("nan")]])
    logprobs = (old_logprobs + torch.tensor([[math.log(r) for r in ratios] + [50.0]])).detach().requires_grad_()
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    loss, stats = policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps=eps)
    loss.backward()
    grad = logprobs.grad[0]
    assert grad[0].item() == 0.0 and grad[1].item() == 0.0 and grad[4].item() == 0.0
    # d/dlogp of -A * exp(logp - old) / n_valid = -A * ratio / 4
    assert grad[2].item() == pytest.approx(-1.0 * 1.1 / 4, rel=1e-5)
    assert grad[3].item() == pytest.approx(2.0 * 1.5 / 4, rel=1e-5)
    # per token max(-A r, -A clip(r)): max(-1.5, -1.2), max(0.5, 0.8), -1.1, max(3.0, 2.4)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 1.1 + 3.0) / 4, rel=1e-5)
    assert stats["clipfrac"].item() == pytest.approx(3 / 4)
    expected_approx_kl = 0.5 * sum(math.log(r) ** 2 for r in ratios) / 4
    assert stats["approx_kl"].item() == pytest.approx(expected_approx_kl, rel=1e-5)
    assert stats["ratio_mean"].item() == pytest.approx(sum(ratios) / 4, rel=1e-5)


def test_policy_loss_ratio_is_exactly_one_when_policy_unchanged():
    g = torch.Generator().manual_seed(5)
    old_logprobs = -torch.rand(3, 5, generator=g) * 4
    advantages = torch.randn(3, 5, generator=g)
    mask = torch.tensor([[1.0] * 5, [1.0] * 2 + [0.0] * 3, [1.0] * 4 + [0.0]])
    loss, stats = policy_loss(old_logprobs.clone(), old_logprobs, advantages, mask)
    assert stats["ratio_mean"].item() == 1.0
    assert stats["clipfrac"].item() == 0.0 and stats["approx_kl"].item() == 0.0
    expected = -(advantages * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)


def test_value_loss_takes_larger_of_clipped_and_unclipped():
    eps = 0.2
    # token 0: old 0, v 1, R 0: v_clip 0.2, (v-R)^2 = 1.0 > (v_clip-R)^2 = 0.04  -> unclipped wins
    # token 1: old 0, v 1, R 2: v_clip 0.2, (v-R)^2 = 1.0 < (v_clip-R)^2 = 3.24  -> clipped wins
    # token 2: old 0.5, v 0.6, R 0: inside the clip range, both 0.36
    # token 3: pad
    values = torch.tensor([[1.0, 1.0, 0.6, 5.0]], requires_grad=True)
    old_values = torch.tensor([[0.0, 0.0, 0.5, float("nan")]])
    returns = torch.tensor([[0.0, 2.0, 0.0, float("inf")]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, stats = value_loss(values, old_values, returns, mask, clip_eps=eps)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 3.24 + 0.36) / 3, rel=1e-6)
    assert stats["vf_clipfrac"].item() == pytest.approx(1 / 3)
    loss.backward()
    # clipped token 1 and the pad get no gradient; token 0: 0.5 * 2 (v - R) / 3
    grad = values.grad[0]
    assert grad[1].item() == 0.0 and grad[3].item() == 0.0
    assert grad[0].item() == pytest.approx(1.0 / 3, rel=1e-6)
    assert grad[2].item() == pytest.approx(0.6 / 3, rel=1e-6)


# ----------------------------------------------------------------------------------------------------
# diagnostics


def test_explained_variance_is_one_for_perfect_and_zero_for_mean_prediction():
    g = torch.Generator().manual_seed(6)
    returns = torch.randn(3, 6, generator=g)
    mask = torch.tensor([[1.0] * 6, [1.0] * 3 + [0.0] * 3, [1.0] + [0.0] * 5])
    garbage = torch.where(mask == 0, torch.full_like(returns, 1e6), returns)
    assert explained_variance(garbage, returns, mask).item() == pytest.approx(1.0)
    mean_prediction = torch.full_like(returns, masked_mean(returns, mask).item())
    assert explained_variance(mean_prediction, returns, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_from_logits_matches_loop_and_ignores_pads():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 5, generator=g)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    entropies = []
    for b, t in [(0, 0), (0, 1), (1, 0)]:
        p = torch.softmax(logits[b, t], dim=-1).tolist()
        entropies.append(-sum(pi * math.log(pi) for pi in p))
    assert entropy_from_logits(logits, mask).item() == pytest.approx(sum(entropies) / 3, rel=1e-5)
    # uniform logits: entropy log V
    assert entropy_from_logits(torch.zeros(1, 2, 5), torch.ones(1, 2)).item() == pytest.approx(math.log(5))


# ----------------------------------------------------------------------------------------------------
# KL controllers


def test_adaptive_kl_controller_follows_ziegler_formula():
    init, target, horizon, n_steps = 0.1, 6.0, 10000.0, 512
    kls = [18.0, 3.0, 6.6, 6.0, 5.4, 0.0, 100.0]  # errors: +2 (clip .2), -.5 (clip -.2), .1, 0, -.1, -1, ...
    ctl = AdaptiveKLController(init, target, horizon)
    expected = init
    for kl in kls:
        error = kl / target - 1
        error = 0.2 if error > 0.2 else (-0.2 if error < -0.2 else error)
        expected = expected * (1 + error * n_steps / horizon)
        ctl.update(kl, n_steps)
        assert ctl.value == pytest.approx(expected, rel=1e-12)
    # the clip: an error of +2 moves beta by exactly the +0.2 step
    one = AdaptiveKLController(init, target, horizon)
    one.update(torch.tensor(18.0), n_steps)
    assert one.value == pytest.approx(init * (1 + 0.2 * n_steps / horizon))


def test_kl_controllers_state_dict_round_trip():
    ctl = AdaptiveKLController(0.2, 6.0, 10000)
    ctl.update(9.0, 64)
    state = ctl.state_dict()
    assert all(isinstance(v, float) for v in state.values())
    resumed = AdaptiveKLController(1.0, 1.0, 1.0)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    ctl.update(3.0, 64)
    resumed.update(3.0, 64)
    assert resumed.value == ctl.value

    fixed = FixedKLController(0.02)
    fixed.update(100.0, 512)
    assert fixed.value == 0.02
    other = FixedKLController(1.0)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.02


# ----------------------------------------------------------------------------------------------------
# Learning-rate schedule


def test_annealed_lr_decays_linearly_from_lr_and_never_reaches_zero_within_the_run():
    # 4 iterations at 1e-4: 1e-4, 0.75e-4, 0.5e-4, 0.25e-4 (by hand: lr * (4 - i) / 4)
    assert [annealed_lr(1e-4, i, 4) for i in range(4)] == pytest.approx([1e-4, 0.75e-4, 0.5e-4, 0.25e-4])
    steps = [annealed_lr(2e-5, i, 35) for i in range(35)]
    assert steps[0] == 2e-5 and min(steps) > 0
    assert np.diff(steps) == pytest.approx([-2e-5 / 35] * 34)  # a constant decrement
