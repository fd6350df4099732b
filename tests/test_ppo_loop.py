"""The PPO loop end to end on tiny models: ratio exactly 1, the no-EOS penalty, PPO-ptx, and learning."""

import numpy as np
import pytest
import torch

import train_ppo
from minigpt_rlhf.common import compute_init, make_scaler
from minigpt_rlhf.losses import lm_loss
from minigpt_rlhf.model import GPT, GPTConfig, swap_unembedding
from minigpt_rlhf.rollout import compute_advantages, make_rollout, policy_logprobs, value_estimates
from minigpt_rlhf.sampling import banned_token_ids

V, EOS, PAD, X = 24, 22, 23, 5  # X: the token the toy reward counts


class Tok:
    eos_id, pad_id, n_vocab = EOS, PAD, V


class CountX(torch.nn.Module):
    """A stand-in reward model: the score at position t is the number of X tokens up to t, so the score
    read at EOS is the number of X tokens in the response (prompts contain none)."""

    def forward(self, tokens, attention_mask=None):
        return ((tokens == X) & (attention_mask == 1)).float().cumsum(1)  # (B, T)


def models(seed=0):
    torch.manual_seed(seed)
    policy = GPT(GPTConfig(block_size=48, vocab_size=V, n_layer=1, n_head=2, n_embd=32)).eval()
    ref = GPT(GPTConfig(**policy.config.__dict__)).eval()
    ref.load_state_dict(policy.state_dict())
    value = swap_unembedding(policy).eval()
    return policy, ref, value


def config(**kw):
    c = train_ppo.Config(ppo_epochs=2, minibatch_size=4, lr=3e-3, max_new_tokens=8, ptx_coef=0.0, kl_coef=0.01,
                         temperature=1.0)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


PROMPTS = [[1, 2, 3], [4, 6], [7, 8, 9, 10], [11]] * 4


def rollout(policy, ref, value, cfg, seed=0, rm=None, prompts=PROMPTS):
    banned = banned_token_ids(V, V, PAD)
    return make_rollout(policy, ref, rm or CountX(), value, prompts, Tok, cfg.max_new_tokens, cfg.temperature,
                        cfg.no_eos_penalty, banned, cfg.minibatch_size, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("temperature", [0.7, 1.0])  # 0.7, the default, catches a temperature left out of a score
def test_ratio_is_exactly_one_on_the_first_minibatch_of_the_first_epoch(temperature):
    policy, ref, value = models()
    cfg = config(temperature=temperature)
    r = compute_advantages(rollout(policy, ref, value, cfg), 0.01, 1.0, 0.95)
    rt = compute_init("cpu", "float32")
    banned = banned_token_ids(V, V, PAD)
    mb = r.index(torch.arange(cfg.minibatch_size))
    _, stats = train_ppo.minibatch_loss(policy, value, mb, cfg, banned, rt, ptx_coef=0.0)
    assert stats["ratio_mean"] == 1.0 and stats["approx_kl"] == 0.0 and stats["clipfrac"] == 0.0
    # and the reference equals the policy before any update: KL exactly 0
    assert torch.equal(r.logprobs, r.ref_logprobs)


def test_minibatches_drop_columns_that_are_padding_in_every_row_and_change_no_output():
    policy, ref, value = models()
    cfg = config()
    r = compute_advantages(rollout(policy, ref, value, cfg), 0.01, 1.0, 0.95)
    P = r.prompt_len
    banned = banned_token_ids(V, V, PAD)
    with torch.no_grad():  # one forward over the whole batch, no column dropped
        full = policy_logprobs(policy, r.tokens, r.attention_mask, P, cfg.temperature, banned)
        full_values = value_estimates(value, r.tokens, r.attention_mask, P)
    real = r.response_mask.bool()
    # make_rollout scored cut minibatches and padded the results back: equal at every real token, 0 elsewhere
    torch.testing.assert_close(r.logprobs[real], full[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(r.values[real], full_values[real], atol=1e-5, rtol=0)
    assert (r.logprobs[~real] == 0).all()
    for idx in [torch.tensor([1, 3]), torch.tensor([0, 2, 5]), torch.arange(len(PROMPTS))]:
        mb = r.index(idx)
        prompt_lens = r.attention_mask[idx, :P].sum(1)
        response_lens = r.response_mask[idx].sum(1)
        # prompts [4, 6] and [11] alone: the longest is 2 tokens, so P - 2 all-pad columns go on the left
        assert mb.prompt_len == int(prompt_lens.max())
        assert mb.response_mask.size(1) == mb.advantages.size(1) == int(response_lens.max())
        assert mb.tokens.size(1) == mb.prompt_len + int(response_lens.max())
        for j, i in enumerate(idx.tolist()):  # every real token kept, in order
            assert torch.equal(mb.tokens[j][mb.attention_mask[j].bool()], r.tokens[i][r.attention_mask[i].bool()])
        n = mb.response_mask.size(1)
        torch.testing.assert_close(mb.advantages, r.advantages[idx, :n])
        assert (r.response_mask[idx, n:] == 0).all()  # only padding was cut
        with torch.no_grad():
            lp = policy_logprobs(policy, mb.tokens, mb.attention_mask, mb.prompt_len, cfg.temperature, banned)
        m = mb.response_mask.bool()
        torch.testing.assert_close(lp[m], full[idx, :n][m], atol=1e-5, rtol=0)
    assert r.index(torch.tensor([1, 3])).prompt_len < P


def test_response_without_eos_gets_the_fixed_penalty_instead_of_the_score():
    policy, ref, value = models()
    with torch.no_grad():  # make EOS impossible to reach: a huge negative logit via its embedding row
        policy.transformer.wte.weight[EOS] = -policy.transformer.wte.weight.sum(0)
    cfg = config(no_eos_penalty=-7.5)
    r = rollout(policy, ref, value, cfg)
    expected = torch.where(r.ended, r.rm_scores, torch.full_like(r.rm_scores, -7.5))
    assert torch.equal(r.scores, expected)
    assert (~r.ended).any()
    # an ended response keeps its RM score: the number of X tokens in it, counted by hand
    for i in torch.nonzero(r.ended).flatten().tolist():
        resp = r.tokens[i, r.prompt_len:][r.response_mask[i].bool()].tolist()
        assert r.scores[i] == resp.count(X)


def test_ptx_term_enters_with_its_coefficient_and_zero_removes_it():
    policy, ref, value = models()
    cfg = config()
    r = compute_advantages(rollout(policy, ref, value, cfg), 0.01, 1.0, 0.95)
    rt = compute_init("cpu", "float32")
    banned = banned_token_ids(V, V, PAD)
    mb = r.index(torch.arange(4))
    x = torch.randint(0, 20, (3, 16))
    y = torch.randint(0, 20, (3, 16))
    base, _ = train_ppo.minibatch_loss(policy, value, mb, cfg, banned, rt, ptx_coef=0.0, ptx_batch=(x, y))
    with_ptx, stats = train_ppo.minibatch_loss(policy, value, mb, cfg, banned, rt, ptx_coef=2.5, ptx_batch=(x, y))
    expected_ptx = torch.nn.functional.cross_entropy(policy(x).reshape(-1, V), y.reshape(-1))
    torch.testing.assert_close(with_ptx - base, 2.5 * expected_ptx)
    assert stats["ptx_loss"] == pytest.approx(lm_loss(policy(x), y).item())
    # ptx_coef = 0 never touches the corpus batch
    loss0, stats0 = train_ppo.minibatch_loss(policy, value, mb, cfg, banned, rt, ptx_coef=0.0, ptx_batch=None)
    torch.testing.assert_close(loss0, base)
    assert stats0["ptx_loss"] == 0.0


def test_tiny_ppo_run_raises_a_trivially_learnable_reward():
    """Reward = number of X tokens in a finished response (no penalty for unfinished ones, so the only
    thing to learn is to say X). Over seeds 0-5, 12 iterations took the mean score from about 0 to between
    0.9 and 4.0 (1 and 2 threads; a single seed's path depends on float rounding, so two are averaged)."""
    finals, firsts = [], []
    for seed in (1, 2):
        policy, ref, value = models(seed=seed)
        cfg = config(lr=1e-2, ppo_epochs=4, kl_coef=0.0, minibatch_size=8, no_eos_penalty=0.0)
        rt = compute_init("cpu", "float32")
        banned = banned_token_ids(V, V, PAD)
        opt = torch.optim.AdamW(list(policy.parameters()) + list(value.parameters()), lr=cfg.lr)
        rng = np.random.default_rng(0)
        prompts = PROMPTS * 2
        for it in range(12):
            r = compute_advantages(rollout(policy, ref, value, cfg, seed=it, prompts=prompts), cfg.kl_coef, 1.0, 0.95)
            if it == 0:
                firsts.append(float(r.scores.mean()))
            train_ppo.ppo_update(policy, value, opt, make_scaler(rt), r, cfg, banned, None, rng, rt, ptx_coef=0.0)
        finals.append(float(rollout(policy, ref, value, cfg, seed=99, prompts=prompts).scores.mean()))
    assert np.mean(finals) > np.mean(firsts) + 1.0, (firsts, finals)


def test_kl_to_reference_is_the_mean_summed_log_ratio_of_each_sample_scored_alone():
    """The KL reported after PPO, mean over responses of sum_t log pi(a_t|s_t) - log pi_SFT(a_t|s_t) at the
    evaluation temperature, equals a brute-force loop that scores each sample alone (no padding, no batching:
    35 samples span two of its chunks of 32); and it is 0 for a model against itself. With ref_temperature, the
    reference is read at its own temperature (the sharpening control: SFT at 0.3 against SFT at 0.7)."""
    from minigpt_rlhf.data import encode_prompt
    from minigpt_rlhf.evaluate import kl_to_reference
    from minigpt_rlhf.tokenizer import get_tokenizer

    tok = get_tokenizer()
    vocab = (tok.n_vocab + 63) // 64 * 64
    cfg_model = GPTConfig(block_size=64, vocab_size=vocab, n_layer=1, n_head=2, n_embd=32)
    torch.manual_seed(0)
    policy = GPT(cfg_model).eval()
    with torch.no_grad():
        policy.lm_head.weight.mul_(20.0)  # (tied to wte) sharper logits: far from the near-uniform fresh ref
    torch.manual_seed(1)
    ref = GPT(cfg_model).eval()
    banned = banned_token_ids(vocab, tok.n_vocab, tok.pad_id)
    rng = np.random.default_rng(0)
    allowed = [i for i in range(tok.n_vocab) if i not in (tok.pad_id, tok.eos_id)]
    samples = []
    for i in range(35):
        response = [int(t) for t in rng.choice(allowed, int(rng.integers(1, 9)))] + [tok.eos_id] * (i % 2)
        samples.append({"prompt": "Name a fruit." if i % 3 else f"List {i} colours, please.", "response_ids": response})
    cfg = train_ppo.Config(eval_temperature=0.7)

    def summed_logprob(model, ids, n_prompt, temperature=cfg.eval_temperature):
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0] / temperature  # (T, V)
        logits[:, banned] = float("-inf")
        logp = torch.log_softmax(logits, dim=-1)
        return sum(float(logp[j - 1, ids[j]]) for j in range(n_prompt, len(ids)))  # token j is read at j - 1

    expected = 0.0
    for s in samples:
        prompt = encode_prompt(tok, s["prompt"])
        ids = prompt + s["response_ids"]
        expected += summed_logprob(policy, ids, len(prompt)) - summed_logprob(ref, ids, len(prompt))
    expected /= len(samples)
    with torch.no_grad():
        got = kl_to_reference(policy, ref, tok, samples, cfg.eval_temperature)
        itself = kl_to_reference(ref, ref, tok, samples, cfg.eval_temperature)
    assert abs(expected) > 1.0  # two different models: the check has something to see
    assert got == pytest.approx(expected, abs=1e-4)
    assert itself == pytest.approx(0.0, abs=1e-6)
    sharper = 0.0
    for s in samples:
        prompt = encode_prompt(tok, s["prompt"])
        ids = prompt + s["response_ids"]
        sharper += summed_logprob(policy, ids, len(prompt), 0.3) - summed_logprob(policy, ids, len(prompt), 0.7)
    with torch.no_grad():
        got = kl_to_reference(policy, policy, tok, samples, 0.3, ref_temperature=0.7)
    assert abs(sharper) > 1.0 and got == pytest.approx(sharper / len(samples), abs=1e-4)


def test_compute_advantages_equals_a_hand_computation():
    """KL-shaped rewards, GAE and whitening, all three, on two responses of 3 and 2 tokens (one pad)."""
    from minigpt_rlhf.rollout import Rollout

    logp = [[-1.0, -2.0, -0.5], [-0.3, -1.2, 0.0]]
    ref_logp = [[-1.5, -1.0, -0.5], [-0.4, -1.0, 0.0]]
    values = [[0.2, -0.1, 0.4], [1.0, 0.5, 9.0]]  # the 9.0 is at a pad and must not leak
    scores, beta, gamma, lam = [2.0, -1.0], 0.1, 1.0, 0.9
    mask = [[1, 1, 1], [1, 1, 0]]
    r = Rollout(tokens=torch.zeros(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 4), prompt_len=1,
                response_mask=torch.tensor(mask, dtype=torch.float), logprobs=torch.tensor(logp),
                ref_logprobs=torch.tensor(ref_logp), values=torch.tensor(values), scores=torch.tensor(scores),
                rm_scores=torch.tensor(scores), ended=torch.tensor([True, True]))
    compute_advantages(r, beta, gamma, lam)
    adv, ret, valid = [], [], []
    for b in range(2):
        n = sum(mask[b])
        rew = [-beta * (logp[b][t] - ref_logp[b][t]) + (scores[b] if t == n - 1 else 0.0) for t in range(n)]
        a, nxt_v, nxt_a = [0.0] * n, 0.0, 0.0
        for t in reversed(range(n)):  # GAE by hand, V and A after the last token are 0
            delta = rew[t] + gamma * nxt_v - values[b][t]
            a[t] = delta + gamma * lam * nxt_a
            nxt_v, nxt_a = values[b][t], a[t]
        adv.append(a + [0.0] * (3 - n))
        ret.append([a[t] + values[b][t] for t in range(n)] + [0.0] * (3 - n))
        valid += a
    mean = sum(valid) / len(valid)
    std = (sum((x - mean) ** 2 for x in valid) / len(valid)) ** 0.5  # biased, as lm-human-preferences
    white = [[(x - mean) / std if m else 0.0 for x, m in zip(row, mrow)] for row, mrow in zip(adv, mask)]
    assert torch.allclose(r.returns, torch.tensor(ret), atol=1e-6)
    assert torch.allclose(r.advantages, torch.tensor(white), atol=1e-5)
    assert torch.allclose(r.kl, torch.tensor([[0.5, -1.0, 0.0], [0.1, -0.2, 0.0]]), atol=1e-6)


@pytest.mark.parametrize("separate", [False, True])
def test_separate_clipping_leaves_the_small_gradient_of_one_network_as_it_is(separate):
    from minigpt_rlhf.common import clip_and_step

    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    ga, gb = [0.1, 0.2, -0.2], [30.0, 40.0]  # norms 0.3 and 50
    a.grad, b.grad = torch.tensor(ga), torch.tensor(gb)
    opt = torch.optim.SGD([a, b], lr=1.0)
    rt = compute_init("cpu", "float32")
    clip_and_step(opt, make_scaler(rt), [a, b], 1.0, [[a], [b]] if separate else None)
    joint = (sum(x * x for x in ga + gb)) ** 0.5
    scale_a = 1.0 if separate else 1.0 / joint  # SGD with lr 1: the parameter moves by minus the clipped gradient
    scale_b = 1.0 / 50.0 if separate else 1.0 / joint
    assert torch.allclose(a.detach(), -torch.tensor(ga) * scale_a, atol=1e-6)
    assert torch.allclose(b.detach(), -torch.tensor(gb) * scale_b, atol=1e-6)


def test_old_logprobs_come_from_the_scoring_module_and_the_update_through_it_sees_ratio_one():
    """train_ppo.py samples with the plain policy but, under --compile, updates through a compiled wrapper that
    rounds differently; make_rollout's score_policy computes the old log-probs with the update's module. A copy
    with other weights stands in for that wrapper here: the ratio is 1 through it, not through the sampler."""
    policy, ref, value = models()
    scorer = GPT(GPTConfig(**policy.config.__dict__)).eval()
    scorer.load_state_dict({k: v + 0.01 * torch.randn_like(v) for k, v in policy.state_dict().items()})
    cfg = config()
    banned = banned_token_ids(V, V, PAD)
    r = make_rollout(policy, ref, CountX(), value, PROMPTS, Tok, cfg.max_new_tokens, cfg.temperature,
                     cfg.no_eos_penalty, banned, cfg.minibatch_size, torch.Generator().manual_seed(0),
                     score_policy=scorer)
    assert torch.equal(r.tokens, rollout(policy, ref, value, cfg).tokens)  # sampled by the policy all the same
    r = compute_advantages(r, 0.01, 1.0, 0.95)
    mb = r.index(torch.arange(cfg.minibatch_size))
    rt = compute_init("cpu", "float32")
    _, through_scorer = train_ppo.minibatch_loss(scorer, value, mb, cfg, banned, rt, ptx_coef=0.0)
    _, through_policy = train_ppo.minibatch_loss(policy, value, mb, cfg, banned, rt, ptx_coef=0.0)
    assert through_scorer["ratio_mean"] == 1.0 and through_scorer["approx_kl"] == 0.0
    assert through_policy["approx_kl"] > 0.0


def test_rlhf_models_load_without_dropout_so_two_passes_agree_and_the_ratio_is_one(tmp_path):
    """An SFT checkpoint trained with dropout: PPO's policy, reference, RM and value model are loaded with dropout
    off (load_model), so scoring the same rollout twice gives the same log-probs, and the ratio of the first
    minibatch is exactly 1 (Huang et al. 2024, "The N Implementation Details of RLHF with PPO": dropout breaks it)."""
    from minigpt_rlhf.checkpoint import load_checkpoint, load_model, save_checkpoint
    from minigpt_rlhf.tokenizer import get_tokenizer

    tok = get_tokenizer()
    torch.manual_seed(0)
    sft = GPT(GPTConfig(block_size=32, vocab_size=2112, n_layer=1, n_head=2, n_embd=16, dropout=0.3))
    save_checkpoint(tmp_path / "sft.pt", sft, tok)
    ckpt = load_checkpoint(tmp_path / "sft.pt")
    assert ckpt["model_config"]["dropout"] == 0.3
    policy = load_model(ckpt, tok, "sft.pt", "cpu", trainable=True)
    tokens = torch.randint(0, tok.n_vocab, (4, 12))
    mask = torch.ones_like(tokens)
    banned = banned_token_ids(2112, tok.n_vocab, tok.pad_id)
    with torch.no_grad():
        first = policy_logprobs(policy, tokens, mask, 4, 0.7, banned)
        second = policy_logprobs(policy, tokens, mask, 4, 0.7, banned)
    assert torch.equal(first, second)
    assert torch.exp(first - second).eq(1.0).all()  # the ratio of an unchanged policy
