"""Batched KV-cache sampling: equivalence with recomputation, per-row EOS, and exact log-probs."""

import torch

from minigpt_rlhf.model import GPT, GPTConfig, KVCache
from minigpt_rlhf.rollout import policy_logprobs
from minigpt_rlhf.sampling import generate, token_logprobs

V, EOS, PAD = 40, 38, 39


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=64, vocab_size=V, n_layer=2, n_head=2, n_embd=32)).eval()


def greedy_reference(model, prompt, n):
    """Greedy decoding by full recomputation, one sequence, no padding, written from scratch."""
    seq = list(prompt)
    out = []
    banned = torch.tensor([PAD])
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([seq]))[0, -1]
        logits[banned] = float("-inf")
        tok = int(logits.argmax())
        out.append(tok)
        seq.append(tok)
        if tok == EOS:
            break
    return out


def test_greedy_with_and_without_cache_and_batched_equal_each_alone():
    model = tiny_model()
    prompts = [[1, 2, 3, 4, 5], [7], [9, 9, 3]]
    cached = generate(model, prompts, 12, EOS, PAD, greedy=True)
    recomputed = generate(model, prompts, 12, EOS, PAD, greedy=True, use_cache=False)
    assert torch.equal(cached.response, recomputed.response)
    for i, p in enumerate(prompts):
        ref = greedy_reference(model, p, 12)
        got = cached.response[i][cached.response_mask[i].bool()].tolist()
        assert got == ref


def test_each_row_stops_at_its_own_eos_and_is_padded_after():
    model = tiny_model()
    prompts = [[1, 2], [3, 4, 5, 6]] * 8
    g = torch.Generator().manual_seed(0)
    s = generate(model, prompts, 30, EOS, PAD, temperature=1.5, generator=g)
    assert 0 < int(s.ended.sum()) < len(prompts)  # some rows stopped, others ran to the limit
    for i in range(len(prompts)):
        row = s.response[i].tolist()
        if EOS in row:
            k = row.index(EOS)
            assert all(t == PAD for t in row[k + 1:])
            assert s.response_mask[i].tolist() == [1] * (k + 1) + [0] * (len(row) - k - 1)
            assert bool(s.ended[i])
        else:
            assert s.response_mask[i].all() and not bool(s.ended[i])
        assert PAD not in row[: int(s.response_mask[i].sum())]


class NextTokenTable(torch.nn.Module):
    """A stand-in model whose next token is a fixed function of the current token: 7 -> EOS, t -> t + 1."""

    def __init__(self):
        super().__init__()
        self.config = GPTConfig(block_size=64, vocab_size=V)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, attention_mask=None, kv_cache=None, outputs_from=0):
        nxt = torch.where(idx == 7, torch.full_like(idx, EOS), (idx + 1) % 30)
        logits = torch.nn.functional.one_hot(nxt, V).float() * 50.0  # (B, T, V)
        return logits[:, outputs_from:]


def test_rows_stop_at_their_own_eos_step():
    s = generate(NextTokenTable(), [[1, 7], [1, 3], [5, 6]], 6, EOS, PAD, greedy=True, use_cache=False)
    # row 0: 7 -> EOS at once; row 1: 3 -> 4 -> 5 -> 6 -> 7 -> EOS; row 2: 6 -> 7 -> EOS.
    # Sampling stops when every row is done (5 steps), not at max_new_tokens.
    assert s.response.tolist() == [
        [EOS, PAD, PAD, PAD, PAD],
        [4, 5, 6, 7, EOS],
        [7, EOS, PAD, PAD, PAD],
    ]
    assert s.response_mask.tolist() == [[1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert s.ended.tolist() == [True, True, True]
    short = generate(NextTokenTable(), [[1, 3]], 3, EOS, PAD, greedy=True, use_cache=False)
    assert short.response.tolist() == [[4, 5, 6]] and short.ended.tolist() == [False]


def fresh_logprobs(model, prompt, response, temperature, top_k=None):
    """log-probs of the response tokens under the sampling distribution, from one full forward of the single
    unpadded sequence, written from scratch."""
    seq = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(seq)[0] / temperature  # (L, V)
    logits[:, PAD] = float("-inf")
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.log_softmax(logits, -1)[len(prompt) - 1: -1].gather(1, seq[0, len(prompt):, None])[:, 0]


def test_rescored_logprobs_of_samples_equal_a_fresh_full_forward_at_the_sampling_temperature():
    # what PPO's rollouts use as the old log-probs: policy_logprobs over the padded batch of samples
    model = tiny_model()
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]
    for temperature, top_k in [(1.0, None), (0.7, None), (1.3, 5)]:
        g = torch.Generator().manual_seed(123)
        s = generate(model, prompts, 10, EOS, PAD, temperature=temperature, top_k=top_k, generator=g)
        with torch.no_grad():
            rescored = policy_logprobs(model, s.tokens, s.attention_mask, s.prompt_tokens.size(1), temperature,
                                       torch.tensor([PAD]))
        for i, p in enumerate(prompts):
            n = int(s.response_mask[i].sum())
            expected = fresh_logprobs(model, p, s.response[i, :n].tolist(), temperature, top_k)
            assert torch.isfinite(expected).all()  # every sampled token is inside the top-k
            if top_k is None:
                torch.testing.assert_close(rescored[i, :n], expected, atol=1e-5, rtol=0)
                assert (rescored[i, n:] == 0).all()


def test_samples_follow_the_tempered_top_k_distribution():
    # the first response token of many rows of one prompt, against softmax(logits / T) over the top k
    model = tiny_model()
    prompt, temperature, top_k = [1, 2, 3], 0.7, 8
    with torch.no_grad():
        logits = model(torch.tensor([prompt]))[0, -1] / temperature  # (V,)
    logits[PAD] = float("-inf")
    kth = logits.topk(top_k).values[-1]
    probs = torch.softmax(logits.masked_fill(logits < kth, float("-inf")), -1)  # (V,)
    s = generate(model, [prompt] * 20000, 1, EOS, PAD, temperature=temperature, top_k=top_k,
                 generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(s.response[:, 0], minlength=V).float() / s.response.size(0)
    assert (freq[probs == 0] == 0).all()
    se = (probs * (1 - probs) / s.response.size(0)).sqrt()
    assert ((freq - probs).abs() <= 4 * se + 1e-9).all(), (freq, probs)


def test_finished_rows_are_dropped_from_the_cache_without_changing_any_row(monkeypatch):
    # rows end at many different steps (the EOS embedding row is scaled up so that greedy decoding meets
    # EOS early in some rows and never in others); finished rows leave the KV cache in several drops
    model = tiny_model()
    with torch.no_grad():
        model.transformer.wte.weight[EOS] *= 4
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 36, (int(torch.randint(1, 8, (1,), generator=g)),), generator=g).tolist()
               for _ in range(24)]
    kept = []
    keep = KVCache.keep
    monkeypatch.setattr(KVCache, "keep", lambda self, rows: (kept.append(len(rows)), keep(self, rows))[1])
    s = generate(model, prompts, 16, EOS, PAD, greedy=True)
    lengths = s.response_mask.sum(1).tolist()
    assert len(set(lengths)) > 5 and 16 in lengths  # ends vary; some rows run to the limit
    assert len(kept) >= 2 and kept == sorted(kept, reverse=True) and kept[-1] < len(prompts)
    for i, p in enumerate(prompts):  # every row equals greedy decoding of its prompt alone, from scratch
        assert s.response[i, : lengths[i]].tolist() == greedy_reference(model, p, 16)
        assert (s.response[i, lengths[i]:] == PAD).all()
    # sampled, with drops: the rows of many lengths, scored as a batch as PPO scores them, each equal a fresh
    # full forward of that row alone
    kept.clear()
    s = generate(model, prompts, 16, EOS, PAD, temperature=0.9, generator=torch.Generator().manual_seed(1))
    assert kept
    with torch.no_grad():
        rescored = policy_logprobs(model, s.tokens, s.attention_mask, s.prompt_tokens.size(1), 0.9,
                                   torch.tensor([PAD]))
    for i, p in enumerate(prompts):
        n = int(s.response_mask[i].sum())
        torch.testing.assert_close(rescored[i, :n], fresh_logprobs(model, p, s.response[i, :n].tolist(), 0.9),
                                   atol=1e-5, rtol=0)


def test_token_logprobs_top_k_keeps_k_tokens():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5]])
    lp = token_logprobs(logits, 1.0, top_k=2)
    assert torch.isinf(lp[0, 0]) and torch.isinf(lp[0, 3])
    expected = torch.log_softmax(torch.tensor([3.0, 2.0]), 0)
    torch.testing.assert_close(lp[0, [1, 2]], expected)


def test_sampling_with_fixed_seed_is_reproducible_and_never_emits_pad():
    model = tiny_model()
    a = generate(model, [[1, 2]] * 8, 20, EOS, PAD, generator=torch.Generator().manual_seed(5))
    b = generate(model, [[1, 2]] * 8, 20, EOS, PAD, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.response, b.response)
    real = a.response[a.response_mask.bool()]
    assert (real != PAD).all()


def test_inverse_cdf_sampling_matches_the_probabilities_and_skips_banned_ids():
    from minigpt_rlhf.sampling import sample_from

    probs = torch.tensor([0.5, 0.0, 0.2, 0.3, 0.0])
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_from(probs.expand(1000, 5), g) for _ in range(40)])  # 40000 draws
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    assert freq[1] == 0 and freq[4] == 0  # zero-probability ids are never drawn
    # within 4 standard errors of each probability
    se = (probs * (1 - probs) / len(draws)).sqrt()
    assert ((freq - probs).abs() <= 4 * se + 1e-9).all(), freq


def test_returned_tensors_can_be_used_in_a_backward_pass():
    # generate decodes under torch.inference_mode, whose tensors autograd refuses to save; PPO feeds the
    # sampled tokens to an embedding and the masks to its losses with gradients on
    model = tiny_model()
    s = generate(model, [[1, 2, 3], [4, 5]], 6, EOS, PAD, generator=torch.Generator().manual_seed(0))
    for x in (s.prompt_tokens, s.prompt_mask, s.response, s.response_mask, s.ended):
        assert not x.is_inference()
    logits = model(s.response, attention_mask=s.response_mask)  # the embedding saves s.response
    logprobs = token_logprobs(logits, banned_ids=torch.tensor([PAD])).gather(-1, s.response[..., None])[..., 0]
    loss = -(logprobs.exp() * s.response_mask).sum()  # mul saves s.response_mask
    loss.backward()
    assert model.transformer.wte.weight.grad.abs().sum() > 0
    s.response_mask.add_(0)  # and the caller may edit them in place
