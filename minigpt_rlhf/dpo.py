"""Direct Preference Optimization (Rafailov et al. 2023): the policy trained on the comparisons directly, with
no reward model and no sampling, against a frozen reference (the SFT model).

    loss = -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

with log pi(y|x) summed over the response's tokens (its EOS included). The paper derives it from the same
KL-regularised objective PPO maximises: the optimum of E[r] - beta * KL(pi || pi_ref) is
pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x), so r = beta * log(pi / pi_ref) + beta * log Z(x), and
Bradley-Terry's likelihood of a comparison depends on r only through r_w - r_l, where Z cancels. beta * log
(pi / pi_ref) is the "implicit reward", whose pair accuracy is logged.

A K-wise ranking gives its C(K, 2) pairs (w ranked above l), kept together as the reward model keeps them: a
prompt's K responses go through one forward pass, and each prompt weighs 1 in the batch mean whatever its K
(the mean over its pairs, as losses.batched_kwise_ranking_loss does; Ouyang et al. 2022, sec. 3.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import encode_prompt
from .rollout import policy_logprobs
from .sampling import left_pad


def ranked_pairs(ranking: list[int]) -> list[tuple[int, int]]:
    """The C(K, 2) (winner, loser) response indices of a ranking (best first), in the order of
    losses._ranked_pair_margins."""
    return [(ranking[i], ranking[j]) for i in range(len(ranking)) for j in range(i + 1, len(ranking))]


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, weights: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO's loss over pairs, each argument (n,) summed response log-probs. weights (n,): each pair's weight in
    the sum (default 1/n each); dpo_batch gives 1 / (C(K,2) * prompts) so that each prompt weighs the same.
    stats (detached): the implicit rewards beta * (log pi - log pi_ref) of chosen and rejected responses, their
    mean margin, and accuracy (margin > 0)."""
    chosen = beta * (policy_chosen - ref_chosen)  # (n,)
    rejected = beta * (policy_rejected - ref_rejected)  # (n,)
    losses = -F.logsigmoid(chosen - rejected)  # (n,)
    if weights is None:
        weights = torch.full_like(losses, 1.0 / losses.numel())
    loss = (losses * weights).sum()
    with torch.no_grad():
        margin = chosen - rejected
        stats = {"chosen_reward": chosen.mean(), "rejected_reward": rejected.mean(), "margin": margin.mean(),
                 "accuracy": (margin > 0).float().mean()}
    return loss, {k: v.detach() for k, v in stats.items()}


def collate_responses(prompts: list[list[int]], responses: list[list[int]], pad_id: int, device=None):
    """Prompts left-padded to one length P, responses right-padded after them: the layout of a rollout
    (rollout.Rollout), so that policy_logprobs reads response token t at column P + t.
    Returns (tokens (B, P + N), attention_mask (B, P + N), P)."""
    p_tokens, p_mask = left_pad(prompts, pad_id, device)  # (B, P)
    N = max(len(r) for r in responses)
    r_tokens = torch.full((len(responses), N), pad_id, dtype=torch.long, device=device)
    r_mask = torch.zeros(len(responses), N, dtype=torch.long, device=device)
    for i, r in enumerate(responses):
        r_tokens[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        r_mask[i, :len(r)] = 1
    return torch.cat([p_tokens, r_tokens], 1), torch.cat([p_mask.long(), r_mask], 1), p_tokens.size(1)


def sequence_logprobs(model, prompts: list[list[int]], responses: list[list[int]], pad_id: int, temperature: float,
                      banned_ids, device=None) -> torch.Tensor:
    """log pi(y|x) of each response given its prompt, summed over the response's tokens, under the tempered
    distribution (the one that is sampled). (B,)"""
    tokens, mask, P = collate_responses(prompts, responses, pad_id, device)
    return policy_logprobs(model, tokens, mask, P, temperature, banned_ids).float().sum(1)  # pads are 0


def encode_comparison(tok, comparison: dict) -> tuple[list[int], list[list[int]]]:
    """(prompt ids, [response ids + EOS if the response ended]) of one comparison, as the reward model and the
    sampler tokenise them."""
    prompt = encode_prompt(tok, comparison["prompt"])
    ended = comparison.get("ended") or [True] * len(comparison["responses"])
    responses = [tok.encode(r) + ([tok.eos_id] if e else []) for r, e in zip(comparison["responses"], ended)]
    return prompt, responses


def dpo_batch(policy, encoded: list[tuple[list[int], list[list[int]]]], rankings: list[list[int]],
              ref_logps: list[torch.Tensor], beta: float, pad_id: int, temperature: float, banned_ids,
              device=None, n_prompts: int | None = None) -> tuple[torch.Tensor, dict]:
    """DPO's loss over whole prompts: each prompt's K responses in one forward pass, its C(K,2) pairs weighted
    1 / (C(K,2) * n_prompts). encoded[i] = (prompt ids, K response ids); ref_logps[i]: (K,) the reference's
    summed log-probs of them, computed once. n_prompts: the prompts of the whole optimizer step (over ranks)."""
    prompts = [p for p, rs in encoded for _ in rs]
    responses = [r for _, rs in encoded for r in rs]
    logps = torch.split(sequence_logprobs(policy, prompts, responses, pad_id, temperature, banned_ids, device),
                        [len(rs) for _, rs in encoded])
    n_prompts = n_prompts or len(encoded)
    pc, pr, rc, rr, w = [], [], [], [], []
    for logp, ref, ranking in zip(logps, ref_logps, rankings):
        pairs = ranked_pairs(ranking)
        win, lose = [a for a, _ in pairs], [b for _, b in pairs]
        ref = ref.to(logp.device)
        pc.append(logp[win]), pr.append(logp[lose]), rc.append(ref[win]), rr.append(ref[lose])
        w.append(torch.full((len(pairs),), 1.0 / (len(pairs) * n_prompts), device=logp.device))
    return dpo_loss(torch.cat(pc), torch.cat(pr), torch.cat(rc), torch.cat(rr), beta, torch.cat(w))
