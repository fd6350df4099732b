"""Batched sampling with a KV cache, and the log-probabilities PPO needs.

PPO's probability ratio compares the policy's log-probability of each sampled token now with the one it
had when the token was sampled. Both must come from the SAME distribution: if tokens are sampled at a
temperature, or from the top-k, the log-probability is taken under that tempered / truncated
distribution (a mismatch shows up as negative KL; Huang et al. 2024). `token_logprobs` is the
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
    logits = logits.float()
    if temperature != 1.0:  # skipping the division at T = 1 saves a (B, V) pass per decoding step
        logits = logits / max(temperature, 1e-8)
    if banned_ids is not None:
        logits = logits.index_fill(-1, banned_ids, float("-inf"))
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return F.log_softmax(logits, dim=-1)


def sample_from(probs: torch.Tensor, generator=None) -> torch.Tensor:
    """One draw per row of probs (B, V) by inverse CDF: u ~ U(0, total), the first id whose cumulative
    probability exceeds u. Same distribution as torch.multinomial, and much cheaper on CPU (bench/RESULTS.md,
    "bench_generate.py", times both); right=True never lands on a zero-probability (banned) id."""
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
    ended: torch.Tensor  # (B,) bool: the response emitted EOS within max_new_tokens

    @property
    def tokens(self):
        return torch.cat([self.prompt_tokens, self.response], dim=1)  # (B, P + N)

    @property
    def attention_mask(self):
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)  # (B, P + N)


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
    drop_finished: bool = True,
) -> Samples:
    """Sample responses for a batch of prompts of different lengths (left-padded together). Each row stops
    independently at EOS and is padded after it. The returned tensors are ordinary tensors (not inference-mode
    ones): they can be used under autograd and edited in place.

    Two switches exist for checks and benchmarks only; training and evaluation keep their defaults:
    use_cache=False recomputes the whole sequence at every step (the reference the KV-cache tests compare
    with, tests/test_sampling.py, and bench/bench_generate.py's baseline); drop_finished=False keeps the rows
    that have ended in the batch to the last step (bench/bench_collect.py measures what dropping them saves)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    prompt_tokens, prompt_mask = left_pad(prompts, pad_id, device)  # (B, P)
    (B, P), N = prompt_tokens.shape, max_new_tokens
    if P + N > model.config.block_size:  # checked once here, so the cached steps need no checks
        raise ValueError(f"prompt length {P} + max_new_tokens {N} exceeds the model's "
                         f"context block_size={model.config.block_size}")
    if pad_id == eos_id:
        raise ValueError("pad_id must differ from eos_id: an EOS token must never be taken for padding (the "
                         "reward is read at EOS, and PPO must learn to emit it)")
    banned = banned_token_ids(model.config.vocab_size, n_vocab or model.config.vocab_size, pad_id, device)
    was_training = model.training
    model.eval()  # dropout off while sampling

    # inference_mode skips autograd's bookkeeping on every op (version counters, view tracking) that no_grad keeps.
    # Its tensors can never enter autograd, so what we return is cloned outside it: PPO feeds the tokens
    # to an embedding under autograd.
    with torch.inference_mode():
        cache = KVCache(model.config, B, P + N, device, dtype) if use_cache else None
        # prompt and response in preallocated buffers, filled in one column per step (no torch.cat)
        tokens = torch.full((B, P + N), pad_id, dtype=torch.long, device=device)  # (B, P + N)
        mask = torch.zeros((B, P + N), dtype=torch.long, device=device)  # (B, P + N)
        tokens[:, :P], mask[:, :P] = prompt_tokens, prompt_mask
        # position of response token t: the row's prompt length + t (left padding does not count)
        positions = prompt_mask.sum(1, keepdim=True) + torch.arange(N, device=device)  # (B, N)
        done = torch.zeros(B, dtype=torch.bool, device=device)  # (B,) the row has emitted EOS
        # With the cache, rows that have finished are dropped from the batch (their keys and values too) once
        # a quarter of those still computed have: later steps then compute only the rows still running.
        rows = slice(None)  # the rows still computed: all of them, then a 1-D index tensor after a drop
        n_rows = B
        n = 0  # steps run
        for t in range(N):
            T = P + t  # tokens so far
            if cache is None:
                logits = model(tokens[:, :T], attention_mask=mask[:, :T], outputs_from=-1)[:, -1]  # (B, V)
            elif t == 0:
                logits = model(prompt_tokens, attention_mask=prompt_mask, kv_cache=cache, outputs_from=-1)[:, -1]
            else:  # only the last token goes in; the cache holds keys and values of the others
                logits = model(tokens[rows, T - 1: T], attention_mask=mask[rows, :T],
                               position_ids=positions[rows, t - 1: t], kv_cache=cache)[:, -1]  # (R, V)
            logp = token_logprobs(logits, temperature, top_k, banned)  # (R, V)
            next_tok = logp.argmax(dim=-1) if greedy else sample_from(logp.exp(), generator)  # (R,)
            # a row that ended before this step gets PAD and mask 0
            ended = done[rows]  # (R,)
            tokens[rows, T] = next_tok.masked_fill(ended, pad_id)
            mask[rows, T] = (~ended).long()
            running = ~(ended | (next_tok == eos_id))  # (R,)
            done[rows] = ~running
            n = t + 1
            n_running = int(running.sum())  # one host sync per step; far cheaper than steps nobody needs
            if n_running == 0:
                break
            if cache is not None and drop_finished and n_running <= 3 * n_rows // 4:
                keep = running.nonzero().squeeze(1)  # (R',) positions of the running rows among those computed
                cache.keep(keep)
                rows = keep if isinstance(rows, slice) else rows[keep]
                n_rows = n_running
    model.train(was_training)
    return Samples(prompt_tokens, prompt_mask, response=tokens[:, P: P + n].clone(),
                   response_mask=mask[:, P: P + n].clone(), ended=done.clone())
