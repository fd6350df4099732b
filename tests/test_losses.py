"""SFT cross-entropy and the reward model's K-wise ranking loss, against explicit loops."""

import math

import pytest
import torch

from minigpt_rlhf.losses import batched_kwise_ranking_loss, lm_loss, sft_loss


def brute_force_ranking_loss(rewards, ranking):
    """-1/C(K,2) * sum over every pair (w above l) of log sigmoid(r_w - r_l), one pair at a time."""
    K = len(ranking)
    total, n_pairs = 0.0, 0
    for a in range(K):
        for b in range(a + 1, K):
            w, l = ranking[a], ranking[b]
            total += -math.log(1.0 / (1.0 + math.exp(-(rewards[w] - rewards[l]))))
            n_pairs += 1
    assert n_pairs == K * (K - 1) // 2
    return total / n_pairs


def kwise_ranking_loss(rewards, ranking):
    """The RM's training loss for ONE prompt: the batched loss over a batch of that prompt alone."""
    loss, _ = batched_kwise_ranking_loss(rewards, [ranking])
    return loss


@pytest.mark.parametrize("K", [2, 4, 9])
def test_kwise_ranking_loss_equals_brute_force_over_pairs(K):
    g = torch.Generator().manual_seed(K)
    for _ in range(5):
        rewards = torch.randn(K, generator=g, dtype=torch.float64) * 2
        ranking = torch.randperm(K, generator=g).tolist()
        loss = kwise_ranking_loss(rewards, ranking)
        assert loss.item() == pytest.approx(brute_force_ranking_loss(rewards.tolist(), ranking), rel=1e-12)


def test_kwise_ranking_loss_for_two_responses_is_pairwise_logistic():
    rewards = torch.tensor([0.3, 1.7])
    # response 1 is preferred: -log sigmoid(1.7 - 0.3)
    assert kwise_ranking_loss(rewards, [1, 0]).item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.4))))


def test_kwise_ranking_loss_gradient_flows_to_rewards():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    ranking = [3, 0, 4, 1, 2]
    kwise_ranking_loss(rewards, ranking).backward()
    # expected gradient from the same loss written as a loop of torch ops
    rewards_ref = rewards.detach().clone().requires_grad_()
    terms = [
        -torch.nn.functional.logsigmoid(rewards_ref[ranking[a]] - rewards_ref[ranking[b]])
        for a in range(5)
        for b in range(a + 1, 5)
    ]
    (sum(terms) / len(terms)).backward()
    torch.testing.assert_close(rewards.grad, rewards_ref.grad)
    assert rewards.grad[3] < 0 and rewards.grad[2] > 0  # push the best up, the worst down


def test_kwise_ranking_loss_rejects_non_permutation():
    with pytest.raises(ValueError):
        kwise_ranking_loss(torch.zeros(3), [0, 0, 1])


def test_batched_loss_is_mean_of_per_prompt_losses():
    g = torch.Generator().manual_seed(1)
    sizes = [2, 4, 9, 5]
    rankings = [torch.randperm(k, generator=g).tolist() for k in sizes]
    rewards_flat = torch.randn(sum(sizes), generator=g, dtype=torch.float64)
    loss, stats = batched_kwise_ranking_loss(rewards_flat, rankings, sizes)
    per_prompt, n_correct, start = [], 0, 0
    for k, ranking in zip(sizes, rankings):
        r = rewards_flat[start : start + k].tolist()
        per_prompt.append(brute_force_ranking_loss(r, ranking))
        n_correct += sum(r[ranking[a]] > r[ranking[b]] for a in range(k) for b in range(a + 1, k))
        start += k
    assert loss.item() == pytest.approx(sum(per_prompt) / len(per_prompt), rel=1e-12)
    assert stats["n_pairs"] == 1 + 6 + 36 + 10
    assert stats["n_correct_pairs"].item() == n_correct
    assert stats["accuracy"].item() == pytest.approx(n_correct / 53)
    # sizes default to the rankings' lengths
    loss_default, _ = batched_kwise_ranking_loss(rewards_flat, rankings)
    assert loss_default.item() == loss.item()


# ----------------------------------------------------------------------------------------------------
# SFT


def _sft_example():
    g = torch.Generator().manual_seed(2)
    B, T, V = 2, 6, 7
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    targets = torch.randint(0, V, (B, T), generator=g)
    # row 0: 2 prompt positions, 3 response tokens + EOS; row 1: 3 prompt positions, 2 tokens, 1 pad
    loss_mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0]])
    return logits, targets, loss_mask


def test_sft_loss_equals_mean_negative_log_softmax_over_masked_positions():
    logits, targets, loss_mask = _sft_example()
    nlls = []
    for b in range(2):
        for t in range(6):
            if loss_mask[b, t]:
                row = logits[b, t].tolist()
                log_z = math.log(sum(math.exp(v) for v in row))
                nlls.append(log_z - row[targets[b, t]])
    assert sft_loss(logits, targets, loss_mask).item() == pytest.approx(sum(nlls) / len(nlls), rel=1e-12)


def test_sft_loss_ignores_prompt_and_pad_positions():
    logits, targets, loss_mask = _sft_example()
    logits = logits.requires_grad_()
    loss = sft_loss(logits, targets, loss_mask)
    loss.backward()
    outside = loss_mask == 0
    assert (logits.grad[outside] == 0).all()
    logits2 = torch.where(outside[..., None], 1e4 * torch.randn_like(logits), logits.detach())
    targets2 = torch.where(outside, 6, targets)  # e.g. a pad id
    loss2 = sft_loss(logits2, targets2, loss_mask)
    assert torch.isfinite(loss2) and loss2.item() == loss.item()


def test_lm_loss_is_mean_over_every_position():
    logits, targets, _ = _sft_example()
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1))
    torch.testing.assert_close(lm_loss(logits, targets), expected)
