"""Training throughput: forward + backward tokens/s of our GPT against Hugging Face transformers'
GPT2LMHeadModel, same config, same weights, same batch, fp32 on the CPU.

Both models compute the same loss the same way: next-token cross-entropy on their logits, written here
(not HF's `labels=` path, whose shift-and-copy would be extra work on one side only). The optimizer step is
left out by default (it costs the same for both and would only dilute the difference); --optimizer adds an
AdamW step to both. Before timing, the script checks that both give the same loss and gradients.

    python bench/bench_train.py                                  # laptop config, batch 16 x 128 tokens
    python bench/bench_train.py --optimizer                      # + AdamW step on both
    python bench/bench_train.py --preset=gpt2 --batch=4 --repeats=3
    python bench/bench_train.py --hf_attn=eager

Timing: warm-up steps, then --repeats rounds; in each round each model does --steps training steps (so
slow drift of a shared machine affects both alike). Reported: the median over rounds of the time per step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import PRESETS, ForeignLoad, build_models  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="laptop")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--optimizer", action="store_true", help="include an AdamW step (for both models)")
    p.add_argument("--steps", type=int, default=5, help="training steps per model per round")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--hf_attn", choices=["sdpa", "eager"], default="sdpa",
                   help="attn_implementation of the transformers model")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def next_token_loss(logits, targets):
    """Mean cross-entropy of logits (B, T, V) against the next tokens (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def main(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import transformers

    preset = PRESETS[args.preset]
    V = preset["vocab_size"]
    with tempfile.TemporaryDirectory() as tmp:
        ours, hf = build_models(preset, args.hf_attn, Path(tmp))
    ours.train()
    hf.train()
    g = torch.Generator().manual_seed(args.seed)
    data = torch.randint(0, V, (args.batch, args.seq_len + 1), generator=g)
    x, y = data[:, :-1], data[:, 1:]  # (B, T) inputs and next-token targets

    forwards = {"ours": lambda: ours(x), "hf": lambda: hf(input_ids=x).logits}
    models = {"ours": ours, "hf": hf}

    # same function, same gradients: otherwise the comparison means nothing
    losses, grads = {}, {}
    for name in models:
        loss = next_token_loss(forwards[name](), y)
        loss.backward()
        losses[name] = loss.item()
        grads[name] = models[name].lm_head.weight.grad.clone()  # tied to wte in both
        models[name].zero_grad(set_to_none=True)
    loss_diff = abs(losses["ours"] - losses["hf"])
    grad_diff = (grads["ours"] - grads["hf"]).abs().max().item()

    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()} \
        if args.optimizer else {}

    def train_step(name):
        loss = next_token_loss(forwards[name](), y)
        loss.backward()
        if name in opts:
            opts[name].step()
        models[name].zero_grad(set_to_none=True)

    n_params = sum(p.numel() for p in ours.parameters())
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    print(f"preset {args.preset}: {preset}, {n_params / 1e6:.1f}M params")
    print(f"batch {args.batch} x {args.seq_len} tokens, fp32, forward + backward"
          f"{' + AdamW step' if args.optimizer else ' (no optimizer step)'}, HF attn_implementation={args.hf_attn}")
    print(f"initial loss ours {losses['ours']:.6f} HF {losses['hf']:.6f} (|diff| {loss_diff:.1e}); "
          f"max |grad diff| on wte {grad_diff:.1e}")
    if loss_diff > 1e-4 or grad_diff > 1e-4:
        raise SystemExit("the two models disagree: the weights were not loaded identically")

    for name in models:
        for _ in range(args.warmup):
            train_step(name)
    per_step = {name: [] for name in models}
    for r in range(args.repeats):
        with ForeignLoad() as load:
            for name in models:
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    train_step(name)
                per_step[name].append((time.perf_counter() - t0) / args.steps)
        print(f"round {r + 1}/{args.repeats}: " +
              ", ".join(f"{n} {1000 * per_step[n][-1]:.1f} ms/step" for n in models)
              + (f"; other processes used {load.cores:.2f} cores" if load.cores is not None else ""), flush=True)

    n_tok = args.batch * args.seq_len
    tps = {name: n_tok / statistics.median(per_step[name]) for name in models}
    labels = {"ours": "ours (minigpt_rlhf GPT)", "hf": f"transformers GPT2LMHeadModel ({args.hf_attn})"}
    print()
    print("| model | median ms/step | min ms/step | tokens/s |")
    print("|---|---:|---:|---:|")
    for name in models:
        print(f"| {labels[name]} | {1000 * statistics.median(per_step[name]):.1f} | "
              f"{1000 * min(per_step[name]):.1f} | {tps[name]:.0f} |")
    print()
    print(f"ours vs transformers: {tps['ours'] / tps['hf']:.2f}x (target >= 1.3x)")
    return tps


if __name__ == "__main__":
    main(parse_args())
