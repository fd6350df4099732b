"""Step 3 rollouts: sample from the policy, then score every response token with the four models.

Layout (see minigpt_rlhf/ppo.py): every per-token tensor is over RESPONSE positions only, (B, N);
`response_mask` is 1 on real response tokens including EOS. The state before response token t is the
sequence up to position P + t - 1, so the policy's logits and the value at that position belong to t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import ppo
from .reward import reward_at_eos
from .sampling import Samples, generate, token_logprobs


@dataclass
class Rollout:
    tokens: torch.Tensor  # (B, P + N) left-padded prompt + right-padded response
    attention_mask: torch.Tensor  # (B, P + N)
    prompt_len: int  # P
    response_mask: torch.Tensor  # (B, N) float
    logprobs: torch.Tensor  # (B, N) policy log-probs at rollout time (the "old" policy)
    ref_logprobs: torch.Tensor  # (B, N) reference (SFT) log-probs of the same tokens
    values: torch.Tensor  # (B, N) value-function estimates V(s_t) at rollout time (0 without a value model)
    scores: torch.Tensor  # (B,) RM score, or the no-EOS penalty
    rm_scores: torch.Tensor  # (B,) raw RM score (also for responses without EOS), for logging
    ended: torch.Tensor  # (B,) bool: emitted EOS
    rewards: torch.Tensor | None = None  # (B, N) KL-shaped per-token rewards
    kl: torch.Tensor | None = None  # (B, N) k1 per-token KL to the reference
    advantages: torch.Tensor | None = None  # (B, N) whitened GAE advantages, or a critic-free estimator's
    returns: torch.Tensor | None = None  # (B, N) value targets

    def index(self, idx):
        """A minibatch: every tensor sliced along the batch dimension, then cut to the columns that hold a real
        token of one of its rows (`padding_span`): position ids come from the mask, so dropping columns that
        are padding in every row changes no output at a real position, and saves computing them."""
        rows = {k: v[idx] if isinstance(v, torch.Tensor) else v for k, v in self.__dict__.items()}
        P = self.prompt_len
        start, n = padding_span(rows["attention_mask"], P)
        out = {}
        for k, v in rows.items():
            if k in ("tokens", "attention_mask"):
                out[k] = v[:, start: P + n]  # (b, P - start + n)
            elif isinstance(v, torch.Tensor) and v.dim() == 2:
                out[k] = v[:, :n]  # (b, n) per-response-token tensors
            else:
                out[k] = v
        out["prompt_len"] = P - start
        return Rollout(**out)


def padding_span(attention_mask: torch.Tensor, prompt_len: int) -> tuple[int, int]:
    """(start, n) for a batch of left-padded prompts of prompt_len columns followed by right-padded responses:
    columns [start, prompt_len + n) hold every real token; those before start are left padding in every row,
    those after are right padding in every row. How many columns that saves in PPO's random minibatches of
    rollouts: bench/RESULTS.md, "bench_ppo.py"."""
    start = prompt_len - int(attention_mask[:, :prompt_len].sum(1).max())
    n = int(attention_mask[:, prompt_len:].sum(1).max())
    return start, n


def response_logits(model, tokens, attention_mask, prompt_len: int):
    """Outputs at the positions that predict / evaluate the response tokens: (B, N, ...)."""
    out = model(tokens, attention_mask=attention_mask, outputs_from=prompt_len - 1)  # (B, N + 1, V) or (B, N + 1)
    return out[:, :-1]


def policy_logprobs(policy, tokens, attention_mask, prompt_len, temperature, banned_ids, return_logp=False):
    """log pi(a_t | s_t) of the response tokens under the tempered distribution we sample from: (B, N).
    With return_logp, also the full (B, N, V) log-distribution (for the entropy)."""
    logits = response_logits(policy, tokens, attention_mask, prompt_len)  # (B, N, V)
    logp = token_logprobs(logits, temperature, None, banned_ids)  # (B, N, V)
    targets = tokens[:, prompt_len:]  # (B, N)
    out = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, N)
    out = out.masked_fill(attention_mask[:, prompt_len:] == 0, 0.0)
    return (out, logp) if return_logp else out


def value_estimates(value_model, tokens, attention_mask, prompt_len):
    """V(s_t) for each response token t: the scalar head's output at the position before it. (B, N)"""
    return response_logits(value_model, tokens, attention_mask, prompt_len).float()


def entropy(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean entropy of (B, N, V) log-probabilities with -inf entries (banned or top-k'd ids)."""
    finite = logp.clamp(min=-1e4)  # exp(-1e4) == 0: the same distribution, without 0 * -inf = nan
    return ppo.entropy_from_logits(finite, mask)


@torch.no_grad()
def make_rollout(policy, ref, rm, value_model, prompts: list[list[int]], tok, max_new_tokens: int,
                 temperature: float, no_eos_penalty: float, banned_ids, minibatch_size: int,
                 generator=None, autocast=None, score_policy=None) -> Rollout:
    """Sample responses from the policy and score them with the reference, reward and value models.

    The old log-probs are recomputed with a full forward pass over the same contiguous minibatches the
    first PPO epoch uses, so the probability ratio is exactly 1 on the first minibatch (tests/test_ppo_loop.py).
    score_policy: the module that recomputes them (default: policy). Pass the one the update runs through
    (e.g. its torch.compile'd wrapper, which shares policy's weights): compiled kernels round differently
    from eager ones (bf16 most of all), so both sides of the ratio must come from the same module;
    sampling itself always uses policy's KV-cache path. Pass the value model the update uses likewise, or None
    for a critic-free estimator (the values are then 0)."""
    autocast = autocast or (lambda: torch.autocast("cpu", enabled=False))
    score_policy = score_policy if score_policy is not None else policy
    with autocast():
        s: Samples = generate(policy, prompts, max_new_tokens, tok.eos_id, tok.pad_id, temperature=temperature,
                              n_vocab=tok.n_vocab, generator=generator)
    tokens, mask, P = s.tokens, s.attention_mask, s.prompt_tokens.size(1)
    N = tokens.size(1) - P
    logprobs, ref_logprobs, values, rm_scores = [], [], [], []
    for i in range(0, tokens.size(0), minibatch_size):
        # the same minibatch, cut to the same columns, as Rollout.index gives the first PPO epoch
        start, n = padding_span(mask[i: i + minibatch_size], P)
        t, m, p = tokens[i: i + minibatch_size, start: P + n], mask[i: i + minibatch_size, start: P + n], P - start
        back = (0, N - n)  # pad the (b, n) results back to the batch's N response columns, with zeros
        with autocast():
            logprobs.append(F.pad(policy_logprobs(score_policy, t, m, p, temperature, banned_ids).float(), back))
            ref_logprobs.append(F.pad(policy_logprobs(ref, t, m, p, temperature, banned_ids).float(), back))
            if value_model is not None:
                values.append(F.pad(value_estimates(value_model, t, m, p), back))
            else:
                values.append(torch.zeros(t.size(0), N, device=t.device))
            rm_scores.append(reward_at_eos(rm, t, m).float())  # (b,)
    rm_scores = torch.cat(rm_scores)
    # a response cut off without EOS gets a fixed penalty instead of the RM score (lm-human-preferences)
    scores = torch.where(s.ended, rm_scores, torch.full_like(rm_scores, no_eos_penalty))
    return Rollout(tokens=tokens, attention_mask=mask, prompt_len=P, response_mask=s.response_mask.float(),
                   logprobs=torch.cat(logprobs), ref_logprobs=torch.cat(ref_logprobs), values=torch.cat(values),
                   scores=scores, rm_scores=rm_scores, ended=s.ended)


@torch.no_grad()
def compute_advantages(r: Rollout, kl_coef: float, gamma: float, lam: float, estimator: str = "gae",
                       group_size: int = 1) -> Rollout:
    """gae: KL-shaped per-token rewards, GAE advantages and returns, advantages whitened over the valid tokens
    of the whole batch (all ranks). rloo, grpo, dr_grpo: ppo.critic_free_advantages over the groups of
    group_size consecutive rollouts of one prompt (not whitened: the group baseline centres them); the returns
    are then the advantages (there is no value model to train on them)."""
    if estimator == "gae":
        r.rewards, r.kl = ppo.kl_penalized_rewards(r.logprobs, r.ref_logprobs, r.scores, r.response_mask, kl_coef)
        advantages, r.returns = ppo.gae(r.rewards, r.values, r.response_mask, gamma, lam)
        r.advantages = ppo.masked_whiten(advantages, r.response_mask, all_ranks=True)
    else:
        r.advantages, r.rewards, r.kl = ppo.critic_free_advantages(estimator, r.scores, r.logprobs, r.ref_logprobs,
                                                                   r.response_mask, kl_coef, group_size, gamma)
        r.returns = r.advantages
    return r


def decode_responses(r: Rollout, tok) -> list[str]:
    """The text of each rollout's response, without its EOS (what the judge and the printed samples see)."""
    texts = []
    for i in range(r.tokens.size(0)):
        n = int(r.response_mask[i].sum())
        ids = r.tokens[i, r.prompt_len: r.prompt_len + n].tolist()
        texts.append(tok.decode(ids[:-1] if bool(r.ended[i]) else ids))
    return texts
