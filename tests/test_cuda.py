"""The CUDA path: bf16 autocast, torch.compile, the KV cache under bf16, fused AdamW and the PPO ratio under
--compile=True, each against the plain fp32 / eager / foreach computation within a stated tolerance.

Marked `cuda` and skipped without a CUDA GPU (`python -m pytest -m cuda tests/test_cuda.py`; bench/gpu_check.sh
runs them first). MINIGPT_TEST_DEVICE=cpu runs them on the CPU instead (bf16 autocast exists there too), which
is how `bench/gpu_check.sh --dry_run` checks this file itself without a GPU.

Tolerances are relative errors ||out - ref|| / ||ref||: fp32 arithmetic in another order lands far under
1e-4; bf16 operands (8 bits of mantissa, relative rounding 2^-9) between 1e-3 and 1e-2.
"""

import contextlib
import copy
import os

import pytest
import torch
import torch.nn.functional as F

import train_ppo
from minigpt_rlhf.common import Runtime, maybe_compile
from minigpt_rlhf.model import GPT, GPTConfig, configure_optimizer, swap_unembedding
from minigpt_rlhf.rollout import compute_advantages, make_rollout
from minigpt_rlhf.sampling import banned_token_ids, generate

DEVICE = torch.device(os.environ.get("MINIGPT_TEST_DEVICE", "cuda"))
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


@contextlib.contextmanager
def exact_fp32():
    """fp32 matmuls in full fp32 (compute_init turns on TF32, whose 10-bit mantissa is a bf16-like error)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(block_size=128, vocab_size=512, n_layer=4, n_head=4, n_embd=256, dropout=0.0)
    return GPT(GPTConfig(**{**cfg, **kw})).to(DEVICE)


def left_padded(B=4, T=64, V=512, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for i in range(B):
        mask[i, : 5 * i] = 0  # row i has 5 i positions of left padding
    return x.to(DEVICE), mask.to(DEVICE)


def test_bf16_autocast_logits_are_within_1e_2_of_fp32():
    m = model().eval()
    x, mask = left_padded()
    with torch.no_grad(), exact_fp32():
        ref = m.double()(x, attention_mask=mask)  # float64: the reference both are measured against
        m.float()
        fp32 = m(x, attention_mask=mask)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            bf16 = m(x, attention_mask=mask)
    assert bf16.dtype == torch.bfloat16  # autocast really ran the unembedding in bf16
    real = mask.bool()
    assert rel_err(fp32[real], ref[real]) < 1e-5
    assert rel_err(bf16[real].float(), ref[real]) < 1e-2


def test_compiled_forward_and_training_step_match_eager_within_1e_4():
    torch._dynamo.reset()
    eager = model()
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model)
    x, mask = left_padded()
    y = torch.roll(x, -1, dims=1)
    with exact_fp32():
        with torch.no_grad():  # the forward PPO scores with: left-padded, response positions only
            a = eager(x, attention_mask=mask, outputs_from=32)
            b = compiled(x, attention_mask=mask, outputs_from=32)
        assert rel_err(b, a) < 1e-4
        # one training step as train_sft.py takes it: next-token loss, backward, clip, AdamW
        params0 = [p.detach().clone() for p in eager.parameters()]
        losses, steps, grads = [], [], []
        for m, fwd in ((eager, eager), (compiled_model, compiled)):
            m.train()
            opt = configure_optimizer(m, 1e-3, 0.1, fused=DEVICE.type == "cuda")
            loss = F.cross_entropy(fwd(x).flatten(0, 1), y.flatten())
            loss.backward()
            grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            steps.append(torch.cat([(p.detach() - p0).flatten() for p, p0 in zip(m.parameters(), params0)]))
    assert abs(losses[1] - losses[0]) < 1e-5 * abs(losses[0])
    assert rel_err(grads[1], grads[0]) < 1e-4
    assert steps[0].abs().max() > 0  # the step moved the weights
    # Adam's first step is lr * g / (|g| + eps), about lr * sign(g): a gradient entry within rounding of 0
    # may flip its sign, so the updates are compared in norm, with room for a few such entries
    assert rel_err(steps[1], steps[0]) < 1e-2


def period_two_model():
    """A 1-layer model trained to continue `a b a b ...`: the next token is the one two positions back, read by
    attention, so its greedy choices have margins of several nats (far above bf16 rounding) and a cache
    that stored the wrong keys or positions would change them."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=48, vocab_size=32, n_layer=1, n_head=2, n_embd=32)).to(DEVICE)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        seq = torch.randint(0, 30, (32, 2), generator=g).repeat(1, 17).to(DEVICE)  # (32, 34)
        loss = F.cross_entropy(m(seq[:, :-1]).flatten(0, 1), seq[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def test_kv_cache_under_bf16_gives_the_same_greedy_tokens_as_recomputation():
    EOS, PAD = 30, 31
    m = period_two_model()
    g = torch.Generator().manual_seed(1)
    pairs = torch.randint(0, 30, (8, 2), generator=g).tolist()
    prompts = [(p * 8)[: 2 + i] for i, p in enumerate(pairs)]  # lengths 2..9: left padding 7..0
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        cached = generate(m, prompts, 24, EOS, PAD, greedy=True)
        recomputed = generate(m, prompts, 24, EOS, PAD, greedy=True, use_cache=False)
    assert torch.equal(cached.response, recomputed.response)
    # and both continue the pattern, so the comparison was made on decisive choices
    expected = [[p[(len(q) + t) % 2] for t in range(24)] for p, q in zip(pairs, prompts)]
    assert cached.response.tolist() == expected


@pytest.mark.skipif(DEVICE.type != "cuda", reason="fused AdamW is compared on CUDA")
def test_fused_adamw_step_matches_foreach():
    torch.manual_seed(0)
    m = model()
    params = {name: list(copy.deepcopy(m).parameters()) for name in ("fused", "foreach")}
    grads = [[torch.randn_like(p) * 1e-3 for p in m.parameters()] for _ in range(3)]
    opts = {name: torch.optim.AdamW(ps, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, **{name: True})
            for name, ps in params.items()}
    for step_grads in grads:  # three steps: the moments and the bias corrections are exercised
        for name, opt in opts.items():
            for p, g in zip(params[name], step_grads):
                p.grad = g.clone()
            opt.step()
    moved = max(float((p - p0).abs().max()) for p, p0 in zip(params["foreach"], m.parameters()))
    assert moved > 1e-3  # three steps of lr 1e-3, each about lr * sign(g)
    for a, b in zip(params["fused"], params["foreach"]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)  # a few float32 ulps of the weights


V, EOS, PAD, X = 24, 22, 23, 5


class CountX(torch.nn.Module):
    """A stand-in reward model: the number of X tokens so far (tests/test_ppo_loop.py)."""

    def forward(self, tokens, attention_mask=None):
        return ((tokens == X) & (attention_mask == 1)).float().cumsum(1)  # (B, T)


class Tok:
    eos_id, pad_id, n_vocab = EOS, PAD, V


def test_ppo_ratio_on_the_first_minibatch_under_compile_is_within_1e_3_of_one():
    """train_ppo.py --compile=True: the update runs through the compiled modules and the rollouts are scored
    by the same modules (make_rollout's score_policy). The compiled graph for the no-grad scoring and the one
    for the training forward are compiled separately and may round differently in bf16, so the ratio is held
    to a tolerance, 1e-3 on its mean (PPO clips at 1 +- 0.2), rather than to exactly 1 as in eager fp32."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    policy = GPT(GPTConfig(block_size=48, vocab_size=V, n_layer=2, n_head=2, n_embd=64)).to(DEVICE).eval()
    ref = GPT(policy.config).to(DEVICE).eval()
    ref.load_state_dict(policy.state_dict())
    value = swap_unembedding(policy).eval()
    rt = Runtime(DEVICE, False, 0, 0, 1, torch.bfloat16)
    train_policy, train_value = maybe_compile(policy, "True", rt), maybe_compile(value, "True", rt)
    cfg = train_ppo.Config(minibatch_size=8, max_new_tokens=12, temperature=1.0)
    banned = banned_token_ids(V, V, PAD, DEVICE)
    prompts = [[1, 2, 3], [4, 6], [7, 8, 9, 10], [11]] * 2  # one minibatch: one shape, one compile per mode
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    r = make_rollout(policy, ref, CountX(), train_value, prompts, Tok, cfg.max_new_tokens, cfg.temperature,
                     cfg.no_eos_penalty, banned, cfg.minibatch_size, gen, rt.autocast, score_policy=train_policy)
    r = compute_advantages(r, 0.01, 1.0, 0.95)
    mb = r.index(torch.arange(cfg.minibatch_size, device=DEVICE))
    _, stats = train_ppo.minibatch_loss(train_policy, train_value, mb, cfg, banned, rt, ptx_coef=0.0)
    print(f"first minibatch under compile, bf16: ratio mean {stats['ratio_mean']:.8f}, "
          f"approx KL {stats['approx_kl']:.3e}, clipfrac {stats['clipfrac']}")
    assert abs(stats["ratio_mean"] - 1.0) < 1e-3
    assert stats["approx_kl"] < 1e-5
    assert stats["clipfrac"] == 0.0
