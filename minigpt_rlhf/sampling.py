"""Batched sampling with a KV cache, and the log-probabilities PPO needs.

PPO's probability ratio compares the policy's log-probability of each sampled token now with the one it
had when the token was sampled. Both must come from the SAME distribution: if tokens are sampled at a
temperature, or from the top-k, the log-probability is taken under that tempered / truncated
distribution (see ../shared/RLHF_NOTES.md: a mismatch shows up as negative KL). `token_logprobs` is the
one place that turns logits into that distribution, used both when sampling and when scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import GPT, KVCache


def token_logprobs(logits, temperature: float = 1.0, top_k: int | None = None, banned_ids=None):
    """Log-probabilities (..., V) of the distribution we sample from: logits / temperature, restricted to
    the top_k logits when top_k is set, with `banned_ids` (PAD, vocabulary padding) never sampled."""
    logits = logits.float() / max(temperature, 1e-8)
    if banned_ids is not None:
        logits = logits.index_fill(-1, banned_ids, float("-inf"))
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return F.log_softmax(logits, dim=-1)


def sample_from(probs: torch.Tensor, generator=None) -> torch.Tensor:
    """One draw per row of probs (B, V) by inverse CDF: u ~ U(0, total), the first id whose cumulative
    probability exceeds u. Same distribution as torch.multinomial, about 10x cheaper on CPU at V = 2048
    (bench/RESULTS.md); right=True never lands on a zero-probability (banned) id."""
    cdf = probs.cumsum(dim=-1)  # (B, V)
    u = torch.rand(probs.size(0), 1, device=probs.device, generator=generator) * cdf[:, -1:]  # (B, 1)
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=probs.size(-1) - 1)  # (B,)


def banned_token_ids(model_vocab: int, n_vocab: int, pad_id: int | None, device=None) -> torch.Tensor:
    """Ids the policy must never emit: PAD, and embedding rows past the tokenizer's vocabulary."""
    ids = list(range(n_vocab, model_vocab))
    if pad_id is not None and pad_id < model_vocab:
        ids.append(pad_id)
    return torch.tensor(sorted(set(ids)), dtype=torch.long, device=device)


def left_pad(prompts: list[list[int]], pad_id: int, device=None):
    """Left-pad token lists to a common length. Returns tokens (B, P) and attention_mask (B, P)."""
    P = max(len(p) for p in prompts)
    if min(len(p) for p in prompts) == 0:
        raise ValueError("cannot sample from an empty prompt")
    tokens = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), P), dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, P - len(p):] = 1
    return tokens.to(device), mask.to(device)


@dataclass
class Samples:
    prompt_tokens: torch.Tensor  # (B, P) left-padded prompts
    prompt_mask: torch.Tensor  # (B, P) 1 on real prompt tokens
    response: torch.Tensor  # (B, N) sampled tokens; pad_id after EOS
    response_mask: torch.Tensor  # (B, N) 1 on real response tokens, EOS included
    logprobs: torch.Tensor  # (B, N) log-prob of each sampled token under the sampling distribution
    ended: torch.Tensor  # (B,) bool: the response emitted EOS within max_new_tokens

    @property
    def tokens(self):
        return torch.cat([self.prompt_tokens, self.response], dim=1)  # (B, P + N)

    @property
    def attention_mask(self):
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)  # (B, P + N)


@torch.no_grad()
def generate(
    model: GPT,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    n_vocab: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Samples:
    """Sample responses for a batch of prompts of different lengths (left-padded together). Each row stops
    independently at EOS and is padded after it. With use_cache=False every step recomputes the whole
    sequence (the slow baseline that bench/bench_generate.py compares with)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # dropout off while sampling
    B = len(prompts)
    prompt_tokens, prompt_mask = left_pad(prompts, pad_id, device)
    P = prompt_tokens.size(1)
    if P + max_new_tokens > model.config.block_size:
        raise ValueError(f"prompt length {P} + max_new_tokens {max_new_tokens} exceeds the model's "
                         f"context block_size={model.config.block_size}")
    banned = banned_token_ids(model.config.vocab_size, n_vocab or model.config.vocab_size, pad_id, device)
    dtype = next(model.parameters()).dtype
    cache = KVCache(model.config, B, P + max_new_tokens, device, dtype) if use_cache else None

    tokens, mask = prompt_tokens, prompt_mask
    response = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logprobs = torch.zeros((B, max_new_tokens), device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    ended = torch.zeros(B, dtype=torch.bool, device=device)
    step_input = tokens
    for t in range(max_new_tokens):
        if cache is not None:
            logits = model(step_input, attention_mask=mask, kv_cache=cache)[:, -1]  # (B, V)
        else:
            logits = model(tokens, attention_mask=mask)[:, -1]  # (B, V)
        logp = token_logprobs(logits, temperature, top_k, banned)  # (B, V)
        if greedy:
            next_tok = logp.argmax(dim=-1)  # (B,)
        else:
            next_tok = sample_from(logp.exp(), generator)  # (B,)
        next_tok = torch.where(done, torch.full_like(next_tok, pad_id), next_tok)
        response[:, t] = next_tok
        logprobs[:, t] = torch.where(done, 0.0, logp.gather(1, next_tok[:, None]).squeeze(1))
        is_eos = (next_tok == eos_id) & ~done
        ended |= is_eos
        alive = ~done  # this step's token is real for rows not finished before it
        done |= is_eos
        tokens = torch.cat([tokens, next_tok[:, None]], dim=1)
        mask = torch.cat([mask, alive.long()[:, None]], dim=1)
        step_input = next_tok[:, None]
        if bool(done.all()):
            response, logprobs = response[:, : t + 1], logprobs[:, : t + 1]
            break
    response_mask = (response != pad_id).long() if pad_id != eos_id else None
    if response_mask is None:  # cannot happen with our tokenizers; kept explicit for clarity
        raise ValueError("pad_id must differ from eos_id")
    model.train(was_training)
    return Samples(prompt_tokens, prompt_mask, response, response_mask, logprobs, ended)
