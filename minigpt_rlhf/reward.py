"""Step 2 pieces: reading the reward at EOS, batches of whole prompts, the RM's training step, its rewards
and held-out loss on comparisons, and normalisation. Comparison files and their collection: comparisons.py.

InstructGPT's labelers ranked K in [4, 9] responses per prompt; all C(K, 2) comparisons of a prompt go
into one batch element, scored with K forward passes (Ouyang et al. 2022, sec. 3.5). Here the K
responses of every prompt in a batch are scored in ONE forward pass of the reward model.
"""

from __future__ import annotations

import numpy as np
import torch

from .common import (
    all_reduce_grads,
    all_reduce_mean,
    check_finite,
    clip_and_step,
    gather_shards,
    make_scaler,
    print0,
)
from .data import DataError, encode_prompt
from .losses import batched_kwise_ranking_loss
from .model import configure_optimizer


def last_token_index(response_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last position with mask 1 in each row: the EOS token (or the final
    token of a truncated response). Does not assume the mask is a prefix of ones.

    A row with no valid token gives -1. Do not use that as an index directly (Python reads -1 as
    the last position); ppo.kl_penalized_rewards gives such a row no score at all.
    """
    T = response_mask.shape[-1]
    positions = torch.arange(T, device=response_mask.device).expand_as(response_mask)  # (B, T)
    return torch.where(response_mask.bool(), positions, -1).max(dim=-1).values  # (B,)


def reward_at_eos(rm, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The reward of (prompt, response + EOS): the scalar at the response's last real token, its EOS,
    located from the attention mask, never at position T-1 of a padded batch. (B,)"""
    values = rm(tokens, attention_mask=attention_mask)  # (B, T)
    return values.gather(1, last_token_index(attention_mask)[:, None]).squeeze(1)


# ----------------------------------------------------------------------------------------------------
# Batches of whole prompts


def encode_responses(tok, prompt: str, responses: list[str], ended: list[bool] | None = None) -> list[list[int]]:
    """prompt + response + EOS for each response: the reward is read at that EOS. A response that was cut off
    at the length limit (ended[i] False) gets no EOS, so the RM sees it unfinished, as the labeler who ranked
    it did and as PPO's rollouts show it (the reward is then read at its last token). ended=None: all ended."""
    p = encode_prompt(tok, prompt)
    ended = [True] * len(responses) if ended is None else ended
    return [p + tok.encode(r) + ([tok.eos_id] if e else []) for r, e in zip(responses, ended, strict=True)]


def collate_sequences(seqs: list[list[int]], pad_id: int, device=None):
    """Right-pad sequences: tokens (N, T), attention_mask (N, T)."""
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return tokens.to(device), mask.to(device)


def prompt_batches(n_prompts: int, prompts_per_batch: int, rng: np.random.Generator | None):
    """Batches of WHOLE prompts: a prompt's C(K,2) pairs are never split across batches."""
    order = rng.permutation(n_prompts) if rng is not None else np.arange(n_prompts)
    return [order[i: i + prompts_per_batch].tolist() for i in range(0, n_prompts, prompts_per_batch)]


def score_comparisons(rm, encoded: list[list[list[int]]], pad_id: int, device) -> torch.Tensor:
    """Rewards of every response of several prompts from ONE forward pass; flat (sum K,) in the order
    prompt 0's responses, prompt 1's, ..."""
    seqs = [s for group in encoded for s in group]
    tokens, mask = collate_sequences(seqs, pad_id, device)
    return reward_at_eos(rm, tokens, mask)


# ----------------------------------------------------------------------------------------------------
# Normalisation


def random_subset(items: list, n: int, seed) -> list:
    """A seeded random sample of n items, in their order (all of them if n <= 0 or n >= len(items)). Not the first
    n lines: a data file may be sorted (the world's is sorted by task family)."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[i] for i in sorted(np.random.default_rng(seed).permutation(len(items))[:n])]


def normalization_demos(demos: list[dict], n: int, seed: int) -> list[dict]:
    """A random sample of n demonstrations, to set the RM's mean-0 bias on: the mean over all task families."""
    return random_subset(demos, n, seed)


def gain_samples(comparisons: list[dict], seed: int, n: int = 200) -> list[dict]:
    """A seeded random sample of n comparisons, whose responses set the RM's unit-std gain."""
    return random_subset(comparisons, n, [seed, 4])


MIN_REWARD_STD = 1e-3  # below this spread of raw rewards the RM is degenerate: the unit-std gain is refused


@torch.no_grad()
def normalize_head(rm, reference_rewards: torch.Tensor, gain_rewards: torch.Tensor | None = None):
    """Fold a gain and bias into the scalar head so that the RM's rewards on `reference_rewards`' inputs
    (the SFT demonstrations) have mean 0, as in InstructGPT, and, if `gain_rewards` is given (RM rewards
    of policy samples), unit standard deviation on those, as lm-human-preferences does so that PPO sees
    unit-scale rewards. r' = gain * (r - mean_demo). Returns (gain, bias_shift, raw_std)."""
    raw_std = float(gain_rewards.std()) if gain_rewards is not None else float(reference_rewards.std())
    if gain_rewards is not None and not raw_std >= MIN_REWARD_STD:
        raise DataError(f"the reward model gives (nearly) the same reward to every sample (std {raw_std:.2g} over "
                        f"{gain_rewards.numel()} responses): a gain of 1/std would blow its rounding up to full-size "
                        "rewards. It learned nothing from its comparisons: give it more (or more varied) "
                        "comparisons, more --epochs or a higher --lr; --normalize_gain=False keeps its raw scale")
    gain = 1.0 / raw_std if gain_rewards is not None else 1.0
    shift = float(reference_rewards.mean())
    head = rm.lm_head
    head.bias.sub_(shift)
    head.weight.mul_(gain)
    head.bias.mul_(gain)
    return gain, shift, raw_std


@torch.no_grad()
def normalize(rm, tok, demos: list[dict], samples: list[dict] | None, rt) -> tuple[float, float, float]:
    """Fold into the RM's head a bias that gives the demonstrations mean reward 0 (Ouyang et al. 2022) and, if
    `samples` (comparisons of policy samples) are given, a gain that gives their responses unit std
    (lm-human-preferences). Returns (gain, shift, raw_std)."""
    demo_rewards = torch.tensor([r for rs in rm_rewards(rm, tok, [
        {"prompt": d["prompt"], "responses": [d["response"]]} for d in demos], rt) for r in rs])
    sample_rewards = torch.tensor([r for rs in rm_rewards(rm, tok, samples, rt) for r in rs]) if samples else None
    gain, shift, raw_std = normalize_head(rm, demo_rewards, sample_rewards)
    print0(f"normalised: demonstrations' mean reward {shift:.3f} -> 0, gain {gain:.3f} (raw std {raw_std:.3f})")
    return gain, shift, raw_std


# ----------------------------------------------------------------------------------------------------
# The reward model on comparisons: its rewards, its held-out loss, its training step


@torch.no_grad()
def rm_rewards(rm, tok, comparisons, rt, batch=16) -> list[list[float]]:
    """The RM's reward of every response of every comparison; sharded over ranks, gathered on all."""
    mine = comparisons[rt.rank:: rt.world_size]  # this rank's shard (all of them in one process)
    out = []
    for i in range(0, len(mine), batch):
        chunk = mine[i: i + batch]
        enc = [encode_responses(tok, c["prompt"], c["responses"], c.get("ended")) for c in chunk]
        flat = score_comparisons(rm, enc, tok.pad_id, rt.device).float().cpu().tolist()
        for c in chunk:
            out.append(flat[: len(c["responses"])])
            flat = flat[len(c["responses"]):]
    return gather_shards(out, rt)


def heldout_loss(rm, tok, comparisons, rt) -> float:
    """Mean K-wise ranking loss over held-out prompts, against their labels (never the gold scores)."""
    rewards = rm_rewards(rm, tok, comparisons, rt)
    flat = torch.tensor([r for rs in rewards for r in rs])
    loss, _ = batched_kwise_ranking_loss(flat, [c["ranking"] for c in comparisons])
    return float(loss)


def rm_step_loss(train_rm, encoded, rankings, batch, pad_id, rt, scaler=None) -> tuple[float, float]:
    """Forward and backward of one RM optimizer step over the whole prompts in `batch` (indices into
    encoded / rankings). Rank r takes prompts r, r + W, ...: a prompt's K responses go through ONE forward
    pass on one rank, so its pairs are never split. The summed per-prompt losses are divided by the number
    of prompts in the whole step (times W, which DDP's gradient averaging divides out), so the gradient
    equals that of one process over the whole batch (tests/test_distributed.py).
    Returns the step's mean loss and pair accuracy over all ranks."""
    mine = batch[rt.rank:: rt.world_size]
    with rt.autocast():
        rewards = score_comparisons(train_rm, [encoded[i] for i in mine], pad_id, rt.device)
    loss, stats = batched_kwise_ranking_loss(rewards.float(), [rankings[i] for i in mine], n_prompts=len(batch))
    loss_w = loss * rt.world_size
    (scaler.scale(loss_w) if scaler is not None else loss_w).backward()  # fp16: scaled (common.make_scaler)
    n_correct = all_reduce_mean(float(stats["n_correct_pairs"]), rt)
    n_pairs = all_reduce_mean(float(stats["n_pairs"]), rt)
    return all_reduce_mean(loss.item(), rt) * rt.world_size, n_correct / n_pairs


def train_more(rm, tok, comparisons: list[dict], epochs: int, lr: float, config, rt, rng) -> float:
    """A later RLHF round: go on training the RM on `comparisons` (old and new) at a constant learning rate.
    The same step as the first round's (rm_step_loss); gradients averaged over ranks by hand. `config` has
    train_rm.py's weight_decay, prompts_per_batch and grad_clip. Returns the mean training-pair accuracy of
    the last epoch."""
    encoded = [encode_responses(tok, c["prompt"], c["responses"], c.get("ended")) for c in comparisons]
    rankings = [c["ranking"] for c in comparisons]
    optimizer = configure_optimizer(rm, lr, config.weight_decay, fused=rt.device.type == "cuda")
    scaler = make_scaler(rt)
    params = [p for p in rm.parameters() if p.requires_grad]
    rm.train()
    for _ in range(epochs):
        accs = []
        for b in prompt_batches(len(comparisons), config.prompts_per_batch, rng):
            if len(b) < rt.world_size:
                continue
            loss, acc = rm_step_loss(rm, encoded, rankings, b, tok.pad_id, rt, scaler)
            check_finite(loss, "rm", "in a later RLHF round", rt)
            all_reduce_grads(params, rt)
            clip_and_step(optimizer, scaler, params, config.grad_clip)
            accs.append(acc)
    rm.eval()
    return float(np.mean(accs))
