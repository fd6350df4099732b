"""Losses of InstructGPT's first two steps (Ouyang et al. 2022, sec. 3.5): next-token cross-entropy
for SFT (and pretraining / the ptx term), and the K-wise ranking loss of the reward model (eq. 1).
The PPO losses live in ppo.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------
# language modelling


def sft_loss(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor,
             n_tokens: float | None = None) -> torch.Tensor:
    """Masked next-token cross-entropy: the mean over positions with loss_mask = 1 of
    -log softmax(logits[b, t])[targets[b, t]].

    logits (B, T, V) and targets (B, T) are already aligned by the caller (logits[:, t] predicts
    targets[:, t]). For SFT the mask covers the demonstration's response tokens and its EOS; prompt
    and pad positions contribute nothing, whatever their targets (ignore_index), and get zero
    gradient. The mean is over tokens of the batch (not a mean of per-sequence means), so long
    answers weigh more, as in ordinary LM training. A batch with no masked-in token gives 0.

    n_tokens: divide the summed loss by this instead of the batch's own token count. Training passes the
    count of the WHOLE optimizer step (every micro-step on every rank), so that gradient accumulation and
    data parallelism give exactly the gradient of one big batch, not a mean of per-micro-batch means.
    """
    B, T, V = logits.shape
    valid = loss_mask.bool()  # (B, T)
    targets = torch.where(valid, targets, -100)  # (B, T) -100 = cross_entropy's ignore_index
    # at least fp32 softmax: bf16 logits lose too much precision in logsumexp over a 50k vocab
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    nll_sum = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), ignore_index=-100, reduction="sum")
    return nll_sum / (valid.sum().clamp_min(1) if n_tokens is None else n_tokens)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Plain mean next-token cross-entropy over every position (pretraining, and the ptx term
    gamma * E_{x~D_pretrain}[log pi(x)] of Ouyang et al. 2022, eq. 2). sft_loss with an all-ones mask."""
    return sft_loss(logits, targets, torch.ones_like(targets, dtype=torch.bool))


# ----------------------------------------------------------------------------------------------------
# reward model


def _ranked_pair_margins(rewards: torch.Tensor, ranking: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """r_w - r_l for each of the C(K,2) pairs (w ranked above l) of one prompt. (C(K,2),)"""
    K = rewards.shape[0]
    if K < 2:
        raise ValueError(f"a ranking needs at least 2 responses, got {K}")
    ranking = torch.as_tensor(ranking, dtype=torch.long, device=rewards.device)  # (K,) best -> worst
    if ranking.shape != (K,) or not torch.equal(torch.sort(ranking).values, torch.arange(K, device=rewards.device)):
        raise ValueError(f"ranking must be a permutation of range({K}), got {ranking.tolist()}")
    ranked = rewards[ranking]  # (K,) ranked[i] = reward of the i-th best response
    margins = ranked[:, None] - ranked[None, :]  # (K, K) margins[i, j] = r_(i) - r_(j)
    above = torch.ones(K, K, dtype=torch.bool, device=rewards.device).triu(diagonal=1)  # i above j
    return margins[above]  # (K*(K-1)/2,)


def batched_kwise_ranking_loss(
    rewards_flat: torch.Tensor,
    rankings: Sequence[Sequence[int]],
    sizes: Sequence[int] | None = None,
    n_prompts: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor | int]]:
    """InstructGPT's reward model loss (Ouyang et al. 2022, eq. 1) over a batch of several whole prompts,
    each with its own K. For one prompt with rewards r of its K responses:

        loss = -1/C(K,2) * sum_{(w, l): w ranked above l} log sigmoid(r_w - r_l)

    rewards_flat (N,): the prompts' rewards concatenated, each prompt's K rewards in the order of
    its responses; rankings[i]: prompt i's response indices (0..K_i-1) from best to worst (a
    permutation of range(K_i)); sizes[i] = K_i (defaults to len(rankings[i]); checked against it if given).

    The batch loss is the mean over prompts of each prompt's loss: each prompt is one batch element with
    weight 1 whatever its K, as the paper trains "all C(K,2) comparisons from each prompt as a single batch
    element" (Ouyang et al. 2022, sec. 3.5); its C(K,2) comparisons come from one forward pass over the K
    responses.

    n_prompts: divide the summed per-prompt losses by this instead of len(rankings): the prompt count of
    the whole optimizer step when it is split over ranks, so that every prompt keeps weight 1 / n_prompts.

    stats (detached): n_correct_pairs (pairs with r_w > r_l strictly; ties count as wrong),
    n_pairs (int), accuracy = n_correct_pairs / n_pairs.
    """
    if sizes is None:
        sizes = [len(r) for r in rankings]
    if len(sizes) != len(rankings) or any(k != len(r) for k, r in zip(sizes, rankings)):
        raise ValueError("sizes must match the lengths of rankings")
    if sum(sizes) != rewards_flat.shape[0]:
        raise ValueError(f"sizes sum to {sum(sizes)} but rewards_flat has {rewards_flat.shape[0]} entries")
    losses, margins_all = [], []
    for rewards, ranking in zip(torch.split(rewards_flat, list(sizes)), rankings):
        margins = _ranked_pair_margins(rewards, ranking)  # (C(K,2),)
        losses.append(-F.logsigmoid(margins).mean())
        margins_all.append(margins)
    loss = torch.stack(losses).sum() / (len(losses) if n_prompts is None else n_prompts)
    margins = torch.cat(margins_all).detach()  # (total pairs,)
    n_correct = (margins > 0).sum()
    stats = {
        "n_correct_pairs": n_correct,
        "n_pairs": margins.numel(),
        "accuracy": n_correct / margins.numel(),
    }
    return loss, stats
