"""The CUDA speed path, checked on CPU as far as it goes: the fp16 loss scaler changes nothing but the scale,
a whole stage runs under fp16 autocast, and a torch.compile'd model is saved without its wrapper."""

import json

import pytest
import torch

import train_ppo
import train_rm
import train_sft
from minigpt_rlhf.checkpoint import save_checkpoint
from minigpt_rlhf.common import Runtime, clip_and_step, make_scaler, maybe_compile
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.model import GPT, GPTConfig
from minigpt_rlhf.tokenizer import get_tokenizer


def tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=32, vocab_size=64, n_layer=1, n_head=2, n_embd=16))


def cpu(dtype):
    return Runtime(torch.device("cpu"), False, 0, 0, 1, dtype)


def test_scaler_is_on_for_fp16_only():
    assert make_scaler(cpu(torch.float16)).is_enabled()
    assert not make_scaler(cpu(torch.bfloat16)).is_enabled()
    assert not make_scaler(cpu(torch.float32)).is_enabled()


def test_a_scaled_step_equals_an_unscaled_one():
    """Scaling by a power of two and unscaling is exact in fp32: the same clipped update, bit for bit."""
    x = torch.randint(0, 64, (4, 16))
    models, scalers = [tiny(), tiny()], [make_scaler(cpu(torch.float16)), make_scaler(cpu(torch.float32))]
    for model, scaler in zip(models, scalers):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(model(x)[:, :-1].reshape(-1, 64), x[:, 1:].reshape(-1))
            scaler.scale(loss).backward()
            clip_and_step(opt, scaler, list(model.parameters()), grad_clip=0.5)
    assert scalers[0].get_scale() > 1  # the fp16 scaler really scaled
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_sft_stage_runs_under_fp16_autocast(tmp_path):
    cfg = parse_config(train_sft.Config, ["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu",
                                          "--dtype=float16"], train_sft.PRESETS)
    train_sft.main(cfg)
    ev = json.loads((tmp_path / "sft" / "eval.json").read_text())
    assert ev["sft_val_loss"] < ev["sft_val_loss_before"]
    weights = torch.load(tmp_path / "sft" / "model.pt", weights_only=True)["model"]
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())  # master weights


def test_a_compiled_model_is_saved_without_its_wrapper(tmp_path):
    model = tiny()
    compiled = torch.compile(model)  # lazy: nothing is compiled until it is called
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    save_checkpoint(tmp_path / "m.pt", compiled, get_tokenizer(), None)
    saved = torch.load(tmp_path / "m.pt", weights_only=True)["model"]
    assert saved.keys() == model.state_dict().keys()


@pytest.mark.parametrize("script", [train_sft, train_rm, train_ppo])
def test_compile_is_off_on_cpu_unless_asked(script):
    model = tiny()
    for flag in ("--compile=False", "--compile=auto"):
        cfg = parse_config(script.Config, [flag], script.PRESETS)
        assert maybe_compile(model, cfg.compile, cpu(torch.float32)) is model
    cfg = parse_config(script.Config, ["--compile=True"], script.PRESETS)
    assert maybe_compile(model, cfg.compile, cpu(torch.float32))._orig_mod is model  # lazy: nothing compiled yet


def test_the_scalar_head_scores_in_fp32_under_bf16_autocast():
    """GRPO divides by its group's std: bf16 output rounding (steps of 2^-7 near 1) between near-equal rewards would
    become full-size advantages. The reward is projected in fp32: the head's output equals the fp32 projection of
    the (bf16-computed) final hidden state, and keeps differences far below bf16's resolution."""
    from minigpt_rlhf.model import swap_unembedding
    from minigpt_rlhf.ppo import grpo_advantages

    torch.manual_seed(0)
    rm = swap_unembedding(tiny()).eval()
    with torch.no_grad():
        rm.lm_head.bias.fill_(1.0)  # rewards near 1, where bf16's step is 2^-7
        rm.lm_head.weight.mul_(1e-3)  # and within a bf16 step of each other
    x = torch.randint(0, 64, (4, 16))
    hidden = {}
    rm.transformer.ln_f.register_forward_hook(lambda m, i, out: hidden.setdefault("x", out))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = rm(x)[:, -1]  # (4,)
    assert scores.dtype == torch.float32
    expected = hidden["x"][:, -1].float() @ rm.lm_head.weight[0].float() + rm.lm_head.bias.float()
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=0)
    spread = float(scores.max() - scores.min())
    assert 0 < spread < 2 ** -7  # distinct in fp32; bf16 would have rounded them to one or two values
    # GRPO then sees the real (small) differences, not rounding steps: its advantages are those of fp32 scores
    torch.testing.assert_close(grpo_advantages(scores, 4), grpo_advantages(expected, 4), atol=1e-3, rtol=0)
