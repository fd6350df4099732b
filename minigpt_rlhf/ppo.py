"""The PPO math of RLHF as plain functions over tensors.

Everything here follows the per-token form of InstructGPT's RL step (Ouyang et al. 2022, sec. 3.5),
which comes from Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences") and
their code, openai/lm-human-preferences:

    reward_t     = -kl_coef * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))  [+ RM score on the EOS token]
    advantages   = GAE(rewards, values)                        (Schulman et al. 2016)
    policy loss  = clipped surrogate objective                 (Schulman et al. 2017, eq. 7)
    value loss   = clipped squared error                       (lm-human-preferences; Huang et al.,
                                                                "The N Implementation Details of
                                                                RLHF with PPO")

Tensor layout (fixed by the rollout code): every (B, T) tensor is over RESPONSE positions only.
    logprobs[b, t]       log pi(a_t | s_t) of response token t under the sampling distribution
    response_mask[b, t]  1.0 for real response tokens INCLUDING the final EOS, 0.0 for padding
    values[b, t]         V(s_t), the value before emitting token t
    scores[b]            the reward model's score of sequence b

Every mean is a masked mean over valid tokens: a mask that is accepted but ignored is the most
common bug in small RLHF repos. Values at pad positions may be arbitrary (even inf/nan): they are
selected away with torch.where before they are used, never multiplied by 0.

Distributed statistics: every statistic is rank-local unless asked otherwise. With all_ranks=True,
masked_mean (dim=None), masked_var, masked_whiten and explained_variance all-reduce their sums and
counts when torch.distributed is initialized, so that e.g. the advantages are whitened over the whole
data-parallel batch; such a call is a collective, which every rank must make (one rank alone would
hang), so the distributed case is the explicit one. all_reduce is not differentiable, so the losses
below use local means and the gradients are averaged over ranks (common.all_reduce_grads); asking for
an all-ranks statistic of a tensor that requires grad raises instead of silently dropping gradient.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .reward import last_token_index

# ----------------------------------------------------------------------------------------------------
# masked statistics


def _dist_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    # accumulate bf16/fp16 statistics in at least fp32
    return torch.promote_types(x.dtype, torch.float32)


def _masked_moments(
    x: torch.Tensor, mask: torch.Tensor, all_ranks: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum x, sum x^2, count) over entries where mask is 1, summed over all ranks if
    all_ranks and torch.distributed is initialized. One all_reduce of a 3-vector."""
    valid = mask.bool()
    x = torch.where(valid, x, 0).to(_acc_dtype(x))
    stats = torch.stack([x.sum(), (x * x).sum(), valid.sum().to(x.dtype)])  # (3,)
    if all_ranks and _dist_active():
        if stats.requires_grad:
            raise RuntimeError(
                "all_reduce would drop the gradient of this statistic; "
                "leave all_ranks=False for a differentiable, rank-local value"
            )
        dist.all_reduce(stats, op=dist.ReduceOp.SUM)
    return stats[0], stats[1], stats[2]


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum_t mask_t * x_t over `dim` (all dims if None). Rank-local, differentiable."""
    x = torch.where(mask.bool(), x, 0)
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None, all_ranks: bool = False) -> torch.Tensor:
    """sum(mask * x) / sum(mask).

    dim=None: one scalar over every valid entry of the batch, over all ranks if all_ranks and
    torch.distributed is initialized (then it is a collective: every rank must call it).
    dim=d: per-slice means along d, always rank-local. A slice with no valid entry gives nan.
    """
    if dim is not None:
        return masked_sum(x, mask, dim) / mask.bool().sum(dim)
    s, _, n = _masked_moments(x, mask, all_ranks)
    return (s / n).to(x.dtype)


def _masked_mean_var(
    x: torch.Tensor, mask: torch.Tensor, unbiased: bool, all_ranks: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    s, _, n = _masked_moments(x, mask, all_ranks)
    mean = s / n
    # two passes (centre, then square) instead of E[x^2] - E[x]^2, which cancels badly in fp32
    _, ss, _ = _masked_moments(x - mean, mask, all_ranks)
    var = ss / n
    if unbiased:
        var = var * n / (n - 1)
    return mean, var


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = False, all_ranks: bool = False) -> torch.Tensor:
    """Var[x] over valid entries: sum(mask * (x - mean)^2) / n, or / (n - 1) if unbiased.
    Over all ranks if all_ranks and torch.distributed is initialized. Fewer than 1 (2 if
    unbiased) valid entries gives nan/inf."""
    return _masked_mean_var(x, mask, unbiased, all_ranks)[1].to(x.dtype)


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    all_ranks: bool = False,
    eps: float = 1e-8,
) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) with mean and (biased) var over the valid tokens of the batch
    (of all ranks if all_ranks and torch.distributed is initialized: then it is a collective).

    As lm-human-preferences' `whiten` (Ziegler et al. 2019): biased variance (tf.nn.moments), and
    shift_mean=False adds the mean back, so only the scale changes (lm-human-preferences so scales
    its rewards; we whiten only the advantages, with the default shift_mean=True).
    Pads are 0 in the output and do not affect the statistics.
    """
    valid = mask.bool()
    mean, var = _masked_mean_var(x, mask, unbiased=False, all_ranks=all_ranks)
    whitened = (x - mean) * torch.rsqrt(var + eps)  # (B, T)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(valid, whitened, 0).to(x.dtype)


# ----------------------------------------------------------------------------------------------------
# rewards


@torch.no_grad()
def kl_penalized_rewards(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards of InstructGPT's objective (Ouyang et al. 2022, eq. 2, RL part), in the
    per-token form of Ziegler et al. 2019:

        kl_t = log pi(a_t|s_t) - log pi_ref(a_t|s_t)          (k1 estimate; 0 on pads)
        r_t  = -kl_coef * kl_t + [t == last valid token] * score

    The score goes on the EOS token itself, not on the token after it: placed one late (on the
    first pad) it would reach EOS only through discounting, or not at all under the mask.
    Returns (rewards, kl), both (B, T), detached.
    """
    valid = response_mask.bool()  # (B, T)
    kl = torch.where(valid, logprobs - ref_logprobs, 0)  # (B, T)
    rewards = -kl_coef * kl  # (B, T)
    T = response_mask.shape[-1]
    positions = torch.arange(T, device=response_mask.device)  # (T,)
    is_last = (positions[None, :] == last_token_index(response_mask)[:, None]) & valid  # (B, T)
    rewards = rewards + torch.where(is_last, scores.to(rewards.dtype)[:, None], 0)  # (B, T)
    return rewards, kl


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref), for logging (Schulman, "Approximating KL
    Divergence", 2020): with kl = log pi - log pi_ref and r = pi_ref / pi = exp(-kl),

        k3 = (r - 1) - log r = exp(-kl) - 1 + kl  >= 0,   unbiased, lower variance than k1.

    Not for the loss: its gradient is biased; the reward uses k1 (Schulman 2020, "Approximating KL Divergence").
    (B, T), 0 on pads.
    """
    kl = torch.where(mask.bool(), logprobs - ref_logprobs, 0)  # (B, T)
    # expm1 keeps precision for small kl; clamp removes rounding below 0 (e^y >= 1 + y exactly)
    return (torch.expm1(-kl) + kl).clamp_min(0)  # (B, T)


# ----------------------------------------------------------------------------------------------------
# advantages


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation (Schulman et al. 2016, eq. 16), backwards over tokens:

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t                      (the value function's regression target)

    with V and A after the last valid token equal to 0 (the episode ends at EOS).
    gamma = 1, lam = 0.95 as in lm-human-preferences (Ziegler et al. 2019).

    The mask gates the recursion like CleanRL's `nextnonterminal`: a pad position carries
    V = 0 and A = 0 to the token before it, so nothing at a pad (value, reward, even nan) reaches
    a valid token. A 0 in the middle of a row therefore ends the episode for the tokens before it.
    Returns (advantages, returns), both (B, T), 0 on pads, detached.
    """
    valid = response_mask.bool()  # (B, T)
    rewards = torch.where(valid, rewards.detach(), 0)  # (B, T)
    values = torch.where(valid, values.detach(), 0)  # (B, T)
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)  # (B, T)
    lastgaelam = torch.zeros_like(rewards[:, 0])  # (B,) A_{t+1}
    nextvalues = torch.zeros_like(rewards[:, 0])  # (B,) V_{t+1}
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]  # (B,)
        lastgaelam = torch.where(valid[:, t], delta + gamma * lam * lastgaelam, 0)  # (B,)
        nextvalues = values[:, t]  # already 0 on pads
        advantages[:, t] = lastgaelam
    returns = torch.where(valid, advantages + values, 0)  # (B, T)
    return advantages, returns


# ----------------------------------------------------------------------------------------------------
# losses


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_eps: float = 0.2,
    aggregate: str = "token_mean",
    max_len: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise:

        ratio    = exp(logprobs - old_logprobs)
        pg_loss1 = -A * ratio
        pg_loss2 = -A * clip(ratio, 1 - eps, 1 + eps)
        loss     = masked_mean(max(pg_loss1, pg_loss2))

    (aggregate: the mean over valid tokens, or GRPO's and Dr. GRPO's reductions, see aggregate_loss.)

    The max is the pessimistic bound: once the ratio has moved past 1 +/- eps in the direction
    the advantage favours, the clipped term wins and that token's gradient is exactly 0.
    Rank-local mean (the gradients are averaged over ranks by common.all_reduce_grads).

    stats (detached 0-dim tensors, rank-local): clipfrac = fraction of valid tokens with
    |ratio - 1| > eps; approx_kl = 0.5 * mean((logprobs - old_logprobs)^2), an estimate of
    KL(old || new); ratio_mean. ratio should be exactly 1 on the first minibatch of the first
    PPO epoch (Huang et al. 2024, "The N Implementation Details of RLHF with PPO"); approx_kl = 0 and
    clipfrac = 0 there.
    """
    valid = response_mask.bool()  # (B, T)
    # select pads away BEFORE exp: exp(garbage) could be inf, and inf * 0 is nan in the backward
    logratio = torch.where(valid, logprobs - old_logprobs, 0)  # (B, T)
    advantages = torch.where(valid, advantages, 0)  # (B, T)
    ratio = torch.exp(logratio)  # (B, T)
    pg_loss1 = -advantages * ratio  # (B, T)
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)  # (B, T)
    loss = aggregate_loss(torch.max(pg_loss1, pg_loss2), response_mask, aggregate, max_len)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean(((ratio - 1.0).abs() > clip_eps).float(), response_mask),
            "approx_kl": 0.5 * masked_mean(logratio.square(), response_mask),
            "ratio_mean": masked_mean(ratio, response_mask),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss of lm-human-preferences (Ziegler et al. 2019; Huang et al., "The N
    Implementation Details of RLHF with PPO"):

        v_clip = old_values + clip(values - old_values, -eps, eps)
        loss   = 0.5 * masked_mean(max((values - R)^2, (v_clip - R)^2))

    The max keeps the larger (more pessimistic) error per token, so the value head gets no
    benefit from moving more than eps away from its rollout-time prediction. Rank-local mean.
    stats: vf_clipfrac = fraction of valid tokens where the clipped error is the larger one.
    """
    valid = response_mask.bool()  # (B, T)
    values = torch.where(valid, values, 0)  # (B, T)
    old_values = torch.where(valid, old_values, 0)  # (B, T)
    returns = torch.where(valid, returns, 0)  # (B, T)
    v_clip = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)  # (B, T)
    vf_loss1 = (values - returns).square()  # (B, T)
    vf_loss2 = (v_clip - returns).square()  # (B, T)
    loss = 0.5 * masked_mean(torch.max(vf_loss1, vf_loss2), response_mask)
    with torch.no_grad():
        vf_clipfrac = masked_mean((vf_loss2 > vf_loss1).float(), response_mask)
    return loss, {"vf_clipfrac": vf_clipfrac.detach()}


# ----------------------------------------------------------------------------------------------------
# diagnostics


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens of the policy's entropy H_t = -sum_v p_v log p_v, with
    p = softmax(logits). logits (B, T, V) must be finite and should be the same (tempered)
    logits the tokens were sampled from. Rank-local and differentiable (usable as a bonus)."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    entropy = -(logp.exp() * logp).sum(dim=-1)  # (B, T)
    return masked_mean(entropy, mask)


@torch.no_grad()
def explained_variance(
    values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, all_ranks: bool = False
) -> torch.Tensor:
    """1 - Var[R - V] / Var[R] over valid tokens (of all ranks if all_ranks): 1 for a perfect value
    function, 0 for one that predicts the mean return, negative for worse. nan if Var[R] = 0 (as CleanRL)."""
    var_returns = masked_var(returns, mask, all_ranks=all_ranks)
    var_residual = masked_var(returns - values, mask, all_ranks=all_ranks)
    return torch.where(var_returns == 0, math.nan, 1.0 - var_residual / var_returns)


# ----------------------------------------------------------------------------------------------------
# KL coefficient controllers (Ziegler et al. 2019, sec. 2.2)


class FixedKLController:
    """A constant KL coefficient beta (InstructGPT: beta = 0.02, Ouyang et al. 2022, sec. 3.5)."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional controller that steers KL(pi || pi_ref) towards `target` (Ziegler et al.
    2019, eq. 2 and sec. 2.2):

        e_t    = clip(KL_t / target - 1, -0.2, 0.2)
        beta  <- beta * (1 + e_t * n_steps / horizon)

    KL_t is the batch mean of the per-sequence SUM of kl_t (not a per-token mean); n_steps is the
    number of episodes in the batch.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.target = float(state.get("target", self.target))
        self.horizon = float(state.get("horizon", self.horizon))


def annealed_lr(lr: float, iteration: int, iterations: int) -> float:
    """The learning rate of iteration `iteration` (0-based) of `iterations`, decayed linearly from lr towards 0:
    lr * (1 - iteration / iterations), as lm-human-preferences anneals PPO's (train_policy.py, lrnow = lr * (1 -
    frac)) and CleanRL's PPO does by default (anneal_lr). The last iteration still trains, at lr / iterations."""
    return lr * (1.0 - iteration / iterations)


def kl_controller(kl_coef: float, target: float = 0.0, horizon: float = 10000.0):
    """The adaptive controller when a KL target is given (target > 0), else the fixed coefficient."""
    return AdaptiveKLController(kl_coef, target, horizon) if target > 0 else FixedKLController(kl_coef)


# ----------------------------------------------------------------------------------------------------
# critic-free advantages: a baseline from the other samples of the same prompt instead of a value model
#
# The rollout batch holds group_size samples of each prompt, consecutive: rows [g*k, (g+1)*k) share a prompt.
# Each estimator turns the k scores of a group into per-sequence advantages; critic_free_advantages then adds
# the per-token KL penalty, as GAE's rewards have it, so that every estimator optimises the same KL-regularised
# objective (OpenRLHF puts the group-normalised score and the per-token k1 in the reward this way:
# experience_maker.py, then get_cumulative_returns). GRPO's paper instead adds k3 to the loss (Shao et al. 2024,
# eq. 3); the k1 in the reward is the one choice kept for all four estimators here.

ESTIMATORS = ("gae", "rloo", "grpo", "dr_grpo")


def _groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) scores as (B / k, k) groups of consecutive rows."""
    if group_size < 2 or scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {group_size} (need k >= 2)")
    return scores.float().view(-1, group_size)


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024, eq. 6): each sample's baseline is the
    mean score of the other k - 1 samples of its prompt,

        A_i = s_i - 1/(k-1) * sum_{j != i} s_j   ( = k/(k-1) * (s_i - mean_j s_j) ).

    The baseline does not depend on s_i, so the gradient stays unbiased. (B,) -> (B,)."""
    g = _groups(scores, group_size)  # (G, k)
    others = (g.sum(1, keepdim=True) - g) / (group_size - 1)  # (G, k)
    return (g - others).view(-1)


def grpo_advantages(scores: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's outcome advantage (Shao et al. 2024, sec. 4.1.2): the score normalised within its group,

        A_i = (s_i - mean(s)) / (std(s) + eps)     (std unbiased, eps as TRL's GRPOTrainer)

    scale=False drops the division: Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"), whose
    authors show that the std favours prompts that are too easy or too hard. A group of equal scores gives 0
    either way (0 / eps, never 0 / 0). (B,) -> (B,)."""
    g = _groups(scores, group_size)  # (G, k)
    centred = g - g.mean(1, keepdim=True)  # (G, k)
    if scale:
        centred = centred / (g.std(1, keepdim=True) + eps)
    return centred.view(-1)


@torch.no_grad()
def critic_free_advantages(
    estimator: str,
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
    group_size: int,
    gamma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token advantages without a value model: the group-baselined score on the last token plus the per-token
    KL penalty, summed from each token to the end of its response (the return with no value to subtract):

        r_t = -kl_coef * kl_t + [t == last] * A_seq,     A_t = sum_{t' >= t} gamma^(t' - t) r_t'

    A_seq from rloo_advantages (rloo) or grpo_advantages (grpo; dr_grpo without the std). That sum is gae()
    with every value 0 and lambda 1. Returns (advantages, rewards, kl), each (B, T), 0 on pads."""
    if estimator == "rloo":
        seq = rloo_advantages(scores, group_size)
    elif estimator in ("grpo", "dr_grpo"):
        seq = grpo_advantages(scores, group_size, scale=estimator == "grpo")
    else:
        raise ValueError(f"unknown critic-free estimator {estimator!r}; expected rloo, grpo or dr_grpo")
    rewards, kl = kl_penalized_rewards(logprobs, ref_logprobs, seq, response_mask, kl_coef)
    advantages, _ = gae(rewards, torch.zeros_like(rewards), response_mask, gamma, lam=1.0)
    return advantages, rewards, kl


def effective_kl_coef(estimator: str, kl_coef: float, group_size: int, group_std: float | None = None,
                      eps: float = 1e-4) -> float:
    """The KL coefficient each estimator applies, in units of the raw score. critic_free_advantages keeps the
    per-token -kl_coef * kl_t of every estimator and baselines only the score, so the weight of the score in the
    last token's advantage differs: dA/ds_i is 1 for PPO (gae) and RLOO (the baseline leaves s_i out), (k-1)/k for
    Dr. GRPO (the group mean includes s_i) and (k-1)/k / (std + eps) for GRPO (std held fixed). The KL's weight
    relative to the score is kl_coef divided by that:

        gae, rloo  beta        dr_grpo  beta * k/(k-1)        grpo  beta * (std + eps) * k/(k-1)

    so one --kl_coef is one objective for PPO and RLOO, and a stronger (Dr. GRPO) or per-prompt (GRPO) KL for the
    others (tests/test_estimators.py measures it from the advantages)."""
    k = group_size
    if estimator in ("gae", "rloo"):
        return kl_coef
    if estimator == "dr_grpo":
        return kl_coef * k / (k - 1)
    if estimator == "grpo":
        if group_std is None:
            raise ValueError("grpo's effective KL coefficient depends on the group's score std: pass group_std")
        return kl_coef * (group_std + eps) * k / (k - 1)
    raise ValueError(f"unknown estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")


def aggregate_loss(per_token: torch.Tensor, response_mask: torch.Tensor, how: str = "token_mean",
                   max_len: int | None = None) -> torch.Tensor:
    """A (B, T) per-token loss reduced to a scalar over the valid tokens:

        token_mean  sum / (number of valid tokens)        PPO here, RLOO (every token weighs the same)
        seq_mean    mean over responses of each response's token mean   GRPO (Shao et al. 2024, eq. 3: 1/|o_i|)
        token_sum   sum / (B * max_len)                   Dr. GRPO (Liu et al. 2025): a constant, so that a
                                                          response's length does not rescale its tokens' weight
    """
    if how == "token_mean":
        return masked_mean(per_token, response_mask)
    if how == "seq_mean":
        per_seq = masked_sum(per_token, response_mask, dim=1) / response_mask.sum(1).clamp_min(1)  # (B,)
        return per_seq.mean()
    if how == "token_sum":
        if not max_len:
            raise ValueError("token_sum needs max_len, the constant the summed loss is divided by")
        return masked_sum(per_token, response_mask) / (per_token.size(0) * max_len)
    raise ValueError(f"unknown loss aggregation {how!r}; expected token_mean, seq_mean or token_sum")


# how each estimator reduces its per-token policy loss (aggregate_loss)
LOSS_AGGREGATION = {"gae": "token_mean", "rloo": "token_mean", "grpo": "seq_mean", "dr_grpo": "token_sum"}
