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


def test_returned_logprobs_equal_a_fresh_full_forward_at_the_sampling_temperature():
    model = tiny_model()
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]
    for temperature, top_k in [(1.0, None), (0.7, None), (1.3, 5)]:
        g = torch.Generator().manual_seed(123)
        s = generate(model, prompts, 10, EOS, PAD, temperature=temperature, top_k=top_k, generator=g)
        for i, p in enumerate(prompts):
            n = int(s.response_mask[i].sum())
            seq = torch.tensor([p + s.response[i, :n].tolist()])
            with torch.no_grad():
                logits = model(seq)[0] / temperature  # (L, V)
            logits[:, PAD] = float("-inf")
            if top_k is not None:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            expected = torch.log_softmax(logits, -1)[len(p) - 1: -1].gather(1, seq[0, len(p):, None])[:, 0]
            torch.testing.assert_close(s.logprobs[i, :n], expected, atol=1e-5, rtol=0)
            assert (s.logprobs[i, n:] == 0).all()
        if top_k is None:
            banned = torch.tensor([PAD])
            with torch.no_grad():
                rescored = policy_logprobs(model, s.tokens, s.attention_mask, s.prompt_tokens.size(1),
                                             temperature, banned)
            torch.testing.assert_close(rescored, s.logprobs, atol=1e-5, rtol=0)


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
        assert (s.response[i, lengths[i]:] == PAD).all() and (s.logprobs[i, lengths[i]:] == 0).all()
    # sampled, with drops: each row's log-probs still equal a fresh full forward of that row
    kept.clear()
    s = generate(model, prompts, 16, EOS, PAD, temperature=0.9, generator=torch.Generator().manual_seed(1))
    assert kept
    banned = torch.tensor([PAD])
    with torch.no_grad():
        rescored = policy_logprobs(model, s.tokens, s.attention_mask, s.prompt_tokens.size(1), 0.9, banned)
    torch.testing.assert_close(rescored, s.logprobs, atol=1e-5, rtol=0)


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
    # sampled tokens to an embedding and the old log-probs to the ratio with gradients on
    model = tiny_model()
    s = generate(model, [[1, 2, 3], [4, 5]], 6, EOS, PAD, generator=torch.Generator().manual_seed(0))
    for x in (s.prompt_tokens, s.prompt_mask, s.response, s.response_mask, s.logprobs, s.ended):
        assert not x.is_inference()
    logits = model(s.response, attention_mask=s.response_mask)  # the embedding saves s.response
    logprobs = token_logprobs(logits, banned_ids=torch.tensor([PAD])).gather(-1, s.response[..., None])[..., 0]
    ratio = (logprobs - s.logprobs).exp()  # (B, N)
    loss = -(ratio * s.logprobs * s.response_mask).sum()  # mul saves s.logprobs and s.response_mask
    loss.backward()
    assert model.transformer.wte.weight.grad.abs().sum() > 0
    s.logprobs.add_(1.0)  # and the caller may edit them in place
