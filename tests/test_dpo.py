"""DPO's loss (Rafailov et al. 2023) against brute-force computations from per-token log-probabilities."""

import math

import pytest
import torch
import torch.nn.functional as F

from minigpt_rlhf.dpo import dpo_batch, dpo_loss, ranked_pairs, sequence_logprobs
from minigpt_rlhf.model import GPT, GPTConfig
from minigpt_rlhf.sampling import banned_token_ids

V, PAD, T = 24, 23, 0.7
BANNED = banned_token_ids(V, V - 1, PAD)  # the pad id is never sampled, so it is not scored either


def model(seed):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=32, vocab_size=V, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()


def brute_logprob(m, prompt, response):
    """log pi(response | prompt) at temperature T: the sequence alone (no padding), one token at a time."""
    x = torch.tensor([prompt + response])
    logits = m(x)[0] / T  # (L, V)
    logits[:, BANNED] = -math.inf
    logp = F.log_softmax(logits, -1)
    return sum(logp[len(prompt) - 1 + t, tok] for t, tok in enumerate(response))


# two prompts of different lengths, responses of different lengths (padding on both sides)
ENCODED = [([1, 2, 3], [[4, 5, 6, 22], [7, 22], [8, 9, 10, 11, 12, 22]]), ([13], [[14, 22], [15, 16, 17]])]
RANKINGS = [[2, 0, 1], [1, 0]]


def test_ranked_pairs_are_every_winner_loser_pair_of_the_ranking():
    ranking = [2, 0, 3, 1]
    brute = {(ranking[i], ranking[j]) for i in range(4) for j in range(4) if i < j}
    assert set(ranked_pairs(ranking)) == brute and len(ranked_pairs(ranking)) == 6


def test_sequence_logprobs_equal_a_token_by_token_sum_with_padding():
    m = model(0)
    prompts = [p for p, rs in ENCODED for _ in rs]
    responses = [r for _, rs in ENCODED for r in rs]
    got = sequence_logprobs(m, prompts, responses, PAD, T, BANNED)
    want = torch.stack([brute_logprob(m, p, r) for p, r in zip(prompts, responses)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_batch_equals_the_formula_on_brute_force_log_probs_each_prompt_weighing_one(beta):
    policy, ref = model(0), model(1)
    ref_logps = [torch.stack([brute_logprob(ref, p, r) for r in rs]).detach() for p, rs in ENCODED]
    loss, stats = dpo_batch(policy, ENCODED, RANKINGS, ref_logps, beta, PAD, T, BANNED)
    with torch.no_grad():
        per_prompt = brute_dpo(policy, ref_logps, beta)
    assert loss.item() == pytest.approx(sum(per_prompt) / len(per_prompt), rel=1e-5)
    assert 0.0 <= stats["accuracy"] <= 1.0


def brute_dpo(policy, ref_logps, beta):
    per_prompt = []
    for (p, rs), ranking, ref_lp in zip(ENCODED, RANKINGS, ref_logps):
        terms = []
        for w, lo in ranked_pairs(ranking):
            z = beta * ((brute_logprob(policy, p, rs[w]) - ref_lp[w]) - (brute_logprob(policy, p, rs[lo]) - ref_lp[lo]))
            terms.append(-math.log(1 / (1 + math.exp(-float(z)))))
        per_prompt.append(sum(terms) / len(terms))  # a prompt's pairs averaged: each prompt weighs 1
    return per_prompt


def test_at_policy_equal_reference_the_loss_is_log_2_with_the_hand_gradient():
    beta = 0.5
    policy = model(0)
    ref = model(0)
    p, (yw, yl) = [1, 2, 3], ([4, 5, 22], [7, 8, 9, 22])
    with torch.no_grad():
        ref_lp = torch.stack([brute_logprob(ref, p, yw), brute_logprob(ref, p, yl)])
    loss, stats = dpo_batch(policy, [(p, [yw, yl])], [[0, 1]], [ref_lp], beta, PAD, T, BANNED)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert stats["margin"].item() == pytest.approx(0.0, abs=1e-6)
    grads = torch.autograd.grad(loss, list(policy.parameters()), allow_unused=True)
    # d/dtheta of -log sigmoid(beta * (lw - lw_ref - ll + ll_ref)) at margin 0 is -beta/2 * (grad lw - grad ll)
    hand = torch.autograd.grad(-beta / 2 * (brute_logprob(policy, p, yw) - brute_logprob(policy, p, yl)),
                               list(policy.parameters()), allow_unused=True)
    for g, h in zip(grads, hand):
        if h is None:
            assert g is None or g.abs().max() == 0
        else:
            torch.testing.assert_close(g, h, atol=1e-6, rtol=1e-4)


def test_beta_scales_the_implicit_reward():
    pc, pr, rc, rr = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -0.5]), torch.tensor([-2.0, -2.0]), \
        torch.tensor([-2.5, -1.0])
    _, s1 = dpo_loss(pc, pr, rc, rr, beta=1.0)
    _, s3 = dpo_loss(pc, pr, rc, rr, beta=3.0)
    for key in ("chosen_reward", "rejected_reward", "margin"):
        assert s3[key].item() == pytest.approx(3 * s1[key].item())
    # implicit rewards: chosen [1, 0], rejected [-0.5, 0.5], margins [1.5, -0.5]
    assert s1["chosen_reward"].item() == pytest.approx(0.5)
    assert s1["margin"].item() == pytest.approx(0.5)
    assert s1["accuracy"].item() == 0.5
