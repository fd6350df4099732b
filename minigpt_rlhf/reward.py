"""Step 2 pieces: comparison data, reading the reward at EOS, batches of whole prompts, normalisation.

InstructGPT's labelers ranked K in [4, 9] responses per prompt; all C(K, 2) comparisons of a prompt go
into one batch element, scored with K forward passes (Ouyang et al. 2022, sec. 3.5). Here the K
responses of every prompt in a batch are scored in ONE forward pass of the reward model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .data import DataError, check_text, encode_prompt, iter_jsonl, source_of


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
# Comparison files


def read_comparisons(path: str | Path) -> list[dict]:
    """K-wise {"prompt", "responses": [...], "ranking": [...] best first} or pairwise
    {"prompt", "chosen", "rejected"} lines (a pairwise line is K = 2 with ranking [0, 1]); optional
    "ended" (one bool per response: did it emit EOS) and "family". The responses of a line must differ:
    two identical texts have no right order, and no reward model can separate them (collect_comparisons
    drops repeats for the same reason). Errors name the file and line."""
    rows = []
    for where, obj in iter_jsonl(path):
        if not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
            raise DataError(f"{where}: expected an object with a non-empty string 'prompt'")
        check_text(obj["prompt"], where, "prompt")
        if "chosen" in obj or "rejected" in obj:
            responses, ranking = [obj.get("chosen"), obj.get("rejected")], [0, 1]
        elif "responses" in obj and "ranking" in obj:
            responses, ranking = obj["responses"], obj["ranking"]
        else:
            raise DataError(f"{where}: expected 'responses' + 'ranking' (K-wise) or 'chosen' + 'rejected'")
        if not isinstance(responses, list) or len(responses) < 2:
            raise DataError(f"{where}: a comparison needs at least 2 responses")
        if any(not isinstance(r, str) or not r.strip() for r in responses):
            raise DataError(f"{where}: every response must be non-empty text")
        for r in responses:
            check_text(r, where, "responses")
        if not isinstance(ranking, list) or any(type(i) is not int for i in ranking) \
                or sorted(ranking) != list(range(len(responses))):
            raise DataError(f"{where}: 'ranking' must be a permutation of 0..{len(responses) - 1}, "
                            f"got {ranking!r}")
        ended = obj.get("ended")
        if ended is not None and (not isinstance(ended, list) or len(ended) != len(responses)
                                  or any(type(e) is not bool for e in ended)):
            raise DataError(f"{where}: 'ended' must be a list of {len(responses)} true/false values, one per "
                            "response, or left out")
        if "family" in obj and not isinstance(obj["family"], str):
            raise DataError(f"{where}: 'family' should be str, got {type(obj['family']).__name__}")
        first = {}
        for i, key in enumerate(zip(responses, ended or [True] * len(responses))):
            if key in first:
                what = ("'chosen' and 'rejected' are the same text" if "chosen" in obj else
                        f"responses {first[key]} and {i} are the same text")
                raise DataError(f"{where}: {what}, which no ranking can order. Remove the repeat")
            first[key] = i
        rows.append({**obj, "responses": responses, "ranking": ranking, "_where": where})
    if not rows:
        raise DataError(f"{path}: no comparisons. Add one JSON object per line")
    return rows


def check_comparisons_fit(tok, comparisons: list[dict], block_size: int):
    """Every prompt + response + EOS of the comparisons must fit the reward model's context: the reward is
    read at that EOS, so a response cannot be cut short."""
    too_long = [(c.get("_where", "?"), len(s)) for c in comparisons
                for s in encode_responses(tok, c["prompt"], c["responses"], c.get("ended")) if len(s) > block_size]
    if too_long:
        raise DataError(f"{too_long[0][0]}: {len(too_long)} comparison responses of {source_of(comparisons)} "
                        f"are longer than the context (this one has {too_long[0][1]} tokens with its prompt, "
                        f"block_size is {block_size}). Shorten them or raise block_size")


def write_jsonl(path: str | Path, rows: list[dict]):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, ensure_ascii=False) + "\n")
    tmp.replace(path)


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


def normalization_demos(demos: list[dict], n: int, seed: int) -> list[dict]:
    """A random sample of n demonstrations, to set the RM's mean-0 bias on. Not the first n lines: a data file
    may be sorted (the world's is sorted by task family), and the bias must be the mean over all of them."""
    if n <= 0 or n >= len(demos):
        return list(demos)
    return [demos[i] for i in sorted(np.random.default_rng(seed).permutation(len(demos))[:n])]


@torch.no_grad()
def normalize_head(rm, reference_rewards: torch.Tensor, gain_rewards: torch.Tensor | None = None):
    """Fold a gain and bias into the scalar head so that the RM's rewards on `reference_rewards`' inputs
    (the SFT demonstrations) have mean 0, as in InstructGPT, and, if `gain_rewards` is given (RM rewards
    of policy samples), unit standard deviation on those, as lm-human-preferences does so that PPO sees
    unit-scale rewards. r' = gain * (r - mean_demo). Returns (gain, bias_shift, raw_std)."""
    raw_std = float(gain_rewards.std()) if gain_rewards is not None else float(reference_rewards.std())
    gain = 1.0 / max(raw_std, 1e-6) if gain_rewards is not None else 1.0
    shift = float(reference_rewards.mean())
    head = rm.lm_head
    head.bias.sub_(shift)
    head.weight.mul_(gain)
    head.bias.mul_(gain)
    return gain, shift, raw_std
