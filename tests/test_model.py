"""The GPT core: padding invariance, the KV cache, the unembedding swap, GPT-2 weight loading."""

import math

import pytest
import torch
import torch.nn.functional as F

from minigpt_rlhf.model import GPT, GPTConfig, KVCache, from_pretrained, swap_unembedding

TINY = GPTConfig(block_size=32, vocab_size=61, n_layer=2, n_head=2, n_embd=16, dropout=0.0)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY.__dict__, **kw})).eval()


def test_left_padded_batch_equals_each_sequence_alone():
    model = tiny_model()
    seqs = [[5, 9, 2, 7, 1], [3, 4], [8, 8, 8, 1, 2, 3, 4, 5]]
    T = max(len(s) for s in seqs)
    pad = 60
    tokens = torch.full((len(seqs), T), pad)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, T - len(s):] = torch.tensor(s)
        mask[i, T - len(s):] = 1
    with torch.no_grad():
        batched = model(tokens, attention_mask=mask)
        for i, s in enumerate(seqs):
            alone = model(torch.tensor([s]))[0]  # (len, V), positions 0..len-1
            torch.testing.assert_close(batched[i, T - len(s):], alone, atol=1e-5, rtol=0)


def test_right_padding_and_pad_values_do_not_change_real_positions():
    model = tiny_model()
    s = torch.tensor([[5, 9, 2, 7]])
    with torch.no_grad():
        alone = model(s)
        for pad_token in (0, 33, 60):
            padded = torch.cat([s, torch.full((1, 3), pad_token)], dim=1)
            mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
            out = model(padded, attention_mask=mask)
            torch.testing.assert_close(out[:, :4], alone, atol=1e-5, rtol=0)


def test_kv_cache_logits_equal_full_recomputation_at_every_step():
    model = tiny_model()
    seq = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]])
    with torch.no_grad():
        full = model(seq)  # (1, T, V)
        cache = KVCache(model.config, 1, seq.size(1), "cpu", torch.float32)
        prefill = model(seq[:, :4], kv_cache=cache)
        torch.testing.assert_close(prefill, full[:, :4], atol=1e-5, rtol=0)
        for t in range(4, seq.size(1)):
            step = model(seq[:, t: t + 1], kv_cache=cache)
            torch.testing.assert_close(step[:, 0], full[:, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("explicit_positions", [False, True])
def test_kv_cache_with_left_padding_matches_full_forward(explicit_positions):
    # generate's cached steps pass position_ids = the row's prompt length + t instead of deriving them
    model = tiny_model()
    tokens = torch.tensor([[60, 60, 7, 8], [1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    nxt = torch.tensor([[11, 12], [13, 14]])
    positions = [torch.tensor([[2], [4]]), torch.tensor([[3], [5]])] if explicit_positions else [None, None]
    with torch.no_grad():
        cache = KVCache(model.config, 2, 6, "cpu", torch.float32)
        model(tokens, attention_mask=mask, kv_cache=cache)
        m = torch.cat([mask, torch.ones(2, 2, dtype=torch.long)], 1)
        s1 = model(nxt[:, :1], attention_mask=m[:, :5], position_ids=positions[0], kv_cache=cache)
        s2 = model(nxt[:, 1:], attention_mask=m, position_ids=positions[1], kv_cache=cache)
        full = model(torch.cat([tokens, nxt], 1), attention_mask=m)
    torch.testing.assert_close(s1[:, 0], full[:, 4], atol=1e-5, rtol=0)
    torch.testing.assert_close(s2[:, 0], full[:, 5], atol=1e-5, rtol=0)


def test_outputs_from_returns_those_positions_of_the_full_output():
    tokens = torch.tensor([[60, 60, 7, 8, 9], [1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    for head in ("lm", "scalar"):
        model = tiny_model(head=head)
        with torch.no_grad():
            full = model(tokens, attention_mask=mask)  # (B, T, V) or (B, T)
            for start in (-1, 2, 4):
                part = model(tokens, attention_mask=mask, outputs_from=start)  # (B, T - start, ...)
                torch.testing.assert_close(part, full[:, start:], atol=1e-6, rtol=0)


def test_attn_mask_of_one_query_sees_real_keys_and_itself():
    from minigpt_rlhf.model import build_attn_mask

    attention_mask = torch.tensor([[0, 0, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 0, 1, 1]])
    B, Tk = attention_mask.shape
    expected = torch.tensor([[[[bool(attention_mask[b, j]) or j == Tk - 1 for j in range(Tk)]]] for b in range(B)])
    for m in (attention_mask, attention_mask.bool()):
        before = m.clone()
        one = build_attn_mask(m, 1)  # (B, 1, 1, Tk): the fast path for a decoding step
        assert torch.equal(one, expected)
        assert torch.equal(one, build_attn_mask(m, Tk)[:, :, -1:])  # the last query of the general mask
        assert torch.equal(m, before)  # the caller's mask is not written to


def test_gpt2_init_and_weight_tying():
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=64, vocab_size=300, n_layer=6, n_head=4, n_embd=256)
    model = GPT(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight
    c_fc = model.transformer.h[0].mlp.c_fc.weight
    c_proj = model.transformer.h[0].mlp.c_proj.weight
    assert abs(c_fc.std().item() - 0.02) < 0.002
    assert abs(c_proj.std().item() - 0.02 / math.sqrt(2 * cfg.n_layer)) < 0.001
    names = {n for n, _ in model.named_parameters()}
    for expected in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
                     "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.weight",
                     "transformer.h.0.mlp.c_fc.weight", "transformer.ln_f.weight"):
        assert expected in names


def test_forward_matches_a_hand_written_gpt2_forward():
    """Recompute one forward pass from the raw weights with explicit matmuls (no SDPA, no modules)."""
    model = tiny_model(seed=3)
    idx = torch.tensor([[4, 8, 15, 16, 23]])
    sd = {k: v for k, v in model.state_dict().items()}
    T, C, nh = idx.size(1), TINY.n_embd, TINY.n_head

    def ln(x, p):
        return F.layer_norm(x, (C,), sd[p + ".weight"], sd[p + ".bias"], 1e-5)

    x = sd["transformer.wte.weight"][idx[0]] + sd["transformer.wpe.weight"][:T]  # (T, C)
    for i in range(TINY.n_layer):
        p = f"transformer.h.{i}."
        h = ln(x, p + "ln_1")
        qkv = h @ sd[p + "attn.c_attn.weight"].T + sd[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=1)
        heads = []
        for hd in range(nh):
            sl = slice(hd * C // nh, (hd + 1) * C // nh)
            att = q[:, sl] @ k[:, sl].T / math.sqrt(C // nh)
            att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
            heads.append(att.softmax(-1) @ v[:, sl])
        y = torch.cat(heads, 1) @ sd[p + "attn.c_proj.weight"].T + sd[p + "attn.c_proj.bias"]
        x = x + y
        h = ln(x, p + "ln_2")
        h = F.gelu(h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    expected = ln(x, "transformer.ln_f") @ sd["transformer.wte.weight"].T
    with torch.no_grad():
        got = model(idx)[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_position_beyond_context_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, TINY.block_size + 1, dtype=torch.long))


# ------------------------------------------------------------------------------------------------
# The unembedding swap (reward model / value function construction)


def test_unembedding_swap_keeps_trunk_and_leaves_lm_untouched():
    lm = tiny_model()
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    rm = swap_unembedding(lm)
    assert rm.config.head == "scalar"
    assert isinstance(rm.lm_head, torch.nn.Linear) and rm.lm_head.weight.shape == (1, TINY.n_embd)
    for k, v in rm.state_dict().items():
        if not k.startswith("lm_head."):
            torch.testing.assert_close(v, before[k], atol=0, rtol=0)
    # nothing shared with the LM, nothing tied inside the RM
    lm_ptrs = {p.data_ptr() for p in lm.parameters()}
    assert not any(p.data_ptr() in lm_ptrs for p in rm.parameters())
    assert rm.lm_head.weight.data_ptr() != rm.transformer.wte.weight.data_ptr()

    idx = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    out = rm(idx)
    assert out.shape == (2, 4)
    # output equals the trunk's final hidden state projected by the new head, computed by hand
    hidden = {}
    handle = rm.transformer.ln_f.register_forward_hook(lambda m, i, o: hidden.setdefault("h", o))
    rm(idx)
    handle.remove()
    expected = hidden["h"] @ rm.lm_head.weight[0] + rm.lm_head.bias[0]
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)

    out.sum().backward()
    assert rm.lm_head.weight.grad.abs().sum() > 0 and rm.lm_head.bias.grad.abs().sum() > 0
    assert rm.transformer.h[0].attn.c_attn.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in lm.parameters())
    for k, v in lm.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)
    # training the RM does not move the LM
    with torch.no_grad():
        for p in rm.parameters():
            p.add_(1.0)
    for k, v in lm.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)


# ------------------------------------------------------------------------------------------------
# from_pretrained, checked against the transformers library (a test-only dependency)


@pytest.mark.parametrize("safe", [True, False])
def test_from_pretrained_matches_transformers_gpt2(tmp_path, safe):
    transformers = pytest.importorskip("transformers")
    if safe:
        pytest.importorskip("safetensors")
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(vocab_size=97, n_positions=40, n_embd=32, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    if safe:
        hf.save_pretrained(tmp_path)
    else:  # transformers 5 only writes safetensors; a .bin is the same state dict through torch.save
        hf.config.save_pretrained(tmp_path)
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).exists()
    ours = from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 97, (3, 17))
    with torch.no_grad():
        expected = hf(idx).logits
        got = ours(idx)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # left padding through our attention mask gives HF's logits for the unpadded sequence
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), idx[:1]], 1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 17, dtype=torch.long)], 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(padded, attention_mask=mask)[:, 5:], expected[:1], atol=1e-4, rtol=0)
    # vocab padding to a multiple of 64 keeps the real logits
    padded_model = from_pretrained(tmp_path, vocab_size=128).eval()
    with torch.no_grad():
        torch.testing.assert_close(padded_model(idx)[..., :97], expected, atol=1e-4, rtol=0)


def test_from_pretrained_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"vocab_size": 10, "n_positions": 8, "n_embd": 8, '
                                          '"n_layer": 1, "n_head": 2}')
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        from_pretrained(tmp_path)
    good = GPT(GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=8))
    sd = {k: v for k, v in good.state_dict().items() if k != "lm_head.weight"}
    for k in list(sd):
        if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            sd[k] = sd[k].t().contiguous()
    bad = dict(sd, **{"transformer.h.0.attn.nonsense": torch.zeros(3)})
    torch.save(bad, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="nonsense"):
        from_pretrained(tmp_path)
    bad = dict(sd, **{"transformer.wpe.weight": torch.zeros(9, 8)})
    torch.save(bad, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="wpe.weight"):
        from_pretrained(tmp_path)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    from_pretrained(tmp_path)  # the well-formed file loads
