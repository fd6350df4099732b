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
    python bench/bench_train.py --hf_fused_gelu                  # + HF with torch's fused GELU (same kernels)
    python bench/bench_train.py --stages                         # our SFT and RM steps, eager vs compiled
    python bench/bench_train.py --stages --preset=gpu --device=cuda   # GPT-2-small shape on a GPU, with MFU
    python bench/bench_train.py --stages --preset=gpu --device=cuda --only=sft_grouped,pretrain --batch=64

Timing: warm-up steps, then --repeats rounds; in each round each model does --steps training steps (so
slow drift of a shared machine affects both alike). Reported: the median over rounds of the time per step.
"""

from __future__ import annotations

import argparse
import copy
import json
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
    p.add_argument("--preset", choices=sorted(set(PRESETS) | set(STAGE_PRESETS)), default="laptop")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--optimizer", action="store_true", help="include an AdamW step (for both models)")
    p.add_argument("--steps", type=int, default=5, help="training steps per model per round")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--hf_attn", choices=["sdpa", "eager"], default="sdpa",
                   help="attn_implementation of the transformers model")
    p.add_argument("--hf_fused_gelu", action="store_true",
                   help="also race a copy of the transformers model with torch's fused tanh-GELU in place of its "
                        "Python formula: it runs the same kernels as ours, so its ratio is what all but the GELU costs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", action="store_true",
                   help="time our real SFT and RM training steps (eager vs torch.compile) instead of the HF race")
    p.add_argument("--device", default="cpu", help="--stages only: cpu | cuda")
    p.add_argument("--no_compile", action="store_true", help="--stages only: eager only")
    p.add_argument("--only", default="sft,sft_grouped,rm",
                   help=f"--stages only: comma-separated stages to time, from {', '.join(STAGES)}")
    p.add_argument("--pretrain_batch", type=int, default=16,
                   help="--stages only: corpus windows of block_size tokens per pretraining step")
    p.add_argument("--json", default="", help="--stages only: also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.stages and args.preset not in STAGE_PRESETS:
        p.error(f"--stages takes --preset in {sorted(STAGE_PRESETS)}")
    if not args.stages and args.preset not in PRESETS:
        p.error(f"the race with transformers takes --preset in {sorted(PRESETS)}")
    unknown = set(args.only.split(",")) - set(STAGES)
    if unknown:
        p.error(f"--only: unknown stage(s) {sorted(unknown)}; choose from {', '.join(STAGES)}")
    return args


# --stages: the model shapes of train_sft.py's presets
STAGE_PRESETS = {"laptop": dict(n_layer=4, n_head=4, n_embd=128, block_size=128),
                 "gpu": dict(n_layer=12, n_head=12, n_embd=768, block_size=256),
                 "tiny": dict(n_layer=1, n_head=2, n_embd=32, block_size=128)}
# sft: train_sft.py's SFT step on shuffled demonstrations; sft_grouped: on batches grouped by length (its
# default); rm: train_rm.py's step; pretrain: train_sft.py's pretraining step (corpus windows of block_size tokens)
STAGES = ("sft", "sft_grouped", "rm", "pretrain")
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16 tensor-core peak, per GPU


def flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    """Training FLOPs per token, forward + backward: 6N for the matmuls with the weights, plus 12 L T d for
    attention's QK^T and AV (Chowdhery et al. 2022, PaLM, appendix B; the estimate nanoGPT's MFU uses).
    N counts the non-embedding weights plus the tied unembedding (which is a matmul)."""
    return 6 * n_params + 12 * n_layer * n_embd * seq_len


def bench_stages(args):
    """Tokens/s of the real pretraining step (lm_loss on corpus windows), SFT step (train_sft.sft_step_loss) and
    RM step (reward.rm_step_loss), each + clip + AdamW, on the real data, eager and compiled; MFU on CUDA."""
    import numpy as np

    import train_sft
    from minigpt_rlhf import reward
    from minigpt_rlhf.common import compute_init
    from minigpt_rlhf.data import SFTData, TokenStream, length_grouped_order, read_sft
    from minigpt_rlhf.losses import lm_loss
    from minigpt_rlhf.model import GPT, GPTConfig, configure_optimizer, swap_unembedding
    from minigpt_rlhf.reward import encode_responses
    from minigpt_rlhf.tokenizer import get_tokenizer

    root = Path(__file__).resolve().parents[1]
    rt = compute_init(args.device, "auto", args.seed)
    tok = get_tokenizer()
    shape = STAGE_PRESETS[args.preset]
    cfg = GPTConfig(vocab_size=((tok.n_vocab + 63) // 64) * 64, dropout=0.0, **shape)
    demos = read_sft(root / "data" / "sft_train.jsonl")
    corpus = TokenStream(tok, root / "data" / "corpus_train.txt")
    sft_data = SFTData(tok, demos, cfg.block_size)
    rng = np.random.default_rng(args.seed)
    # train_sft.py's --group_by_length: consecutive slices of this order are batches of similar length
    grouped = length_grouped_order(sft_data.lengths(), args.batch, np.random.default_rng(args.seed))
    # RM batches: 4 prompts x K = 6 responses (demonstrations of other prompts stand in: content is irrelevant)
    rm_prompts = [[encode_responses(tok, demos[i]["prompt"], [demos[j]["response"] for j in rng.choice(len(demos), 6)])
                   for i in rng.choice(len(demos), 4)] for _ in range(8)]
    rankings = [list(rng.permutation(6)) for _ in range(4)]
    gpu = torch.cuda.get_device_name() if rt.device.type == "cuda" else ""
    peak = next((v for k, v in PEAK_FLOPS.items() if k in gpu), None)
    print(f"torch {torch.__version__}, device {rt.device} {gpu}, dtype {rt.dtype}, threads {torch.get_num_threads()}")
    print(f"preset {args.preset}: {shape}; pretraining batch {args.pretrain_batch} x {cfg.block_size} tokens, "
          f"SFT batch {args.batch} demonstrations, RM batch 4 prompts x 6 responses")
    print(f"MFU = tokens/s x (6N + 12 L T d) / peak, peak = {f'{peak / 1e12:.0f} TFLOP/s dense bf16' if peak else '-'}")
    print("\n| stage | mode | median ms/step | tokens/s | MFU | first step (compile) s | foreign load (cores) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    results, rows = {}, []
    stages = [s for s in STAGES if s in args.only.split(",")]
    for stage in stages:
        # with sft also timed, sft_grouped is there for the grouping comparison: eager suffices
        grouping_only = stage == "sft_grouped" and "sft" in stages
        for mode in ("eager",) if args.no_compile or grouping_only else ("eager", "compiled"):
            torch.manual_seed(args.seed)
            model = GPT(cfg).to(rt.device)
            if stage == "rm":
                model = swap_unembedding(model)
            train_model = torch.compile(model) if mode == "compiled" else model
            optimizer = configure_optimizer(model, 1e-4, 0.1, fused=rt.device.type == "cuda")
            n_params = sum(p.numel() for n, p in model.named_parameters() if "wpe" not in n)

            def step(i, stage=stage, train_model=train_model, model=model, optimizer=optimizer):
                if stage == "pretrain":
                    x, y = (t.to(rt.device) for t in corpus.batch(args.pretrain_batch, cfg.block_size, rng))
                    with rt.autocast():
                        loss = lm_loss(train_model(x).float(), y)
                    loss.backward()
                elif stage.startswith("sft"):
                    if stage == "sft":  # shuffled batches (--group_by_length=False)
                        rows = list(rng.choice(len(sft_data), args.batch, replace=False))
                    else:
                        start = (i * args.batch) % (len(grouped) - args.batch + 1)
                        rows = list(grouped[start: start + args.batch])
                    train_sft.sft_step_loss(train_model, sft_data, rows, rt)
                    x = sft_data.batch(rows)[0]
                else:
                    batch = rm_prompts[i % len(rm_prompts)]
                    reward.rm_step_loss(train_model, batch, rankings, list(range(4)), tok.pad_id, rt)
                    x = torch.zeros(sum(len(e) for e in batch), max(len(s) for e in batch for s in e))
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                return x.shape

            def sync():
                if rt.device.type == "cuda":
                    torch.cuda.synchronize()

            t0 = time.perf_counter()
            step(0)
            sync()
            first = time.perf_counter() - t0
            for i in range(args.warmup):
                step(i + 1)
            per_step, tokens, foreign = [], 0, []
            for r in range(args.repeats):
                sync()
                with ForeignLoad() as load:
                    t0 = time.perf_counter()
                    shapes = [step(r * args.steps + i) for i in range(args.steps)]
                    sync()
                    per_step.append((time.perf_counter() - t0) / args.steps)
                foreign.append(load.cores if load.cores is not None else float("nan"))
                tokens = sum(b * t for b, t in shapes) / args.steps
            med = statistics.median(per_step)
            mean_t = statistics.mean(t for _, t in shapes)
            tps = tokens / med
            mfu = tps * flops_per_token(n_params, cfg.n_layer, cfg.n_embd, mean_t) / peak if peak else None
            results[(stage, mode)] = tps
            results[(stage, mode, "ms")] = med
            rows.append(dict(stage=stage, mode=mode, ms_per_step=1000 * med, tokens_per_s=tps, mfu=mfu,
                             first_step_s=first, mean_seq_len=mean_t, n_params=n_params,
                             flops_per_token=flops_per_token(n_params, cfg.n_layer, cfg.n_embd, mean_t)))
            print(f"| {stage} | {mode} | {1000 * med:.1f} | {tps:.0f} | {f'{mfu:.1%}' if mfu else '-'} | {first:.1f} | "
                  f"{max(foreign):.2f} |", flush=True)
    speedups = {}
    for stage in stages:
        if (stage, "compiled") in results:
            speedups[stage] = results[(stage, "compiled")] / results[(stage, "eager")]
            print(f"{stage}: compiled vs eager {speedups[stage]:.2f}x")
    if "sft" in stages and "sft_grouped" in stages:
        print(f"sft: batches grouped by length vs shuffled, time per step of {args.batch} demonstrations: "
              f"{results[('sft', 'eager', 'ms')] / results[('sft_grouped', 'eager', 'ms')]:.2f}x faster")
    print("tokens = input positions of the padded batches (padding included); MFU = tokens/s x "
          "(6N + 12 L T d) / peak bf16 FLOP/s")
    if args.json:
        meta = dict(torch=torch.__version__, device=str(rt.device), gpu=gpu, dtype=str(rt.dtype), preset=args.preset,
                    shape=shape, peak_flops=peak, flops_formula="6N + 12 L T d per token (PaLM, appendix B)")
        with open(args.json, "w") as f:
            json.dump(dict(meta, rows=rows, compiled_vs_eager=speedups), f, indent=2)
    return results


def next_token_loss(logits, targets):
    """Mean cross-entropy of logits (B, T, V) against the next tokens (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def main(args):
    torch.set_num_threads(args.threads)
    if args.stages:
        return bench_stages(args)
    torch.manual_seed(args.seed)
    import transformers

    preset = PRESETS[args.preset]
    V = preset["vocab_size"]
    with tempfile.TemporaryDirectory() as tmp:
        ours, hf = build_models(preset, args.hf_attn, Path(tmp))
    models = {"ours": ours, "hf": hf}
    if args.hf_fused_gelu:  # the same function (the loss and gradient check below holds), one fused kernel
        models["hf_fused"] = copy.deepcopy(hf)
        for block in models["hf_fused"].transformer.h:
            block.mlp.act = torch.nn.GELU(approximate="tanh")
    for m in models.values():
        m.train()
    g = torch.Generator().manual_seed(args.seed)
    data = torch.randint(0, V, (args.batch, args.seq_len + 1), generator=g)
    x, y = data[:, :-1], data[:, 1:]  # (B, T) inputs and next-token targets

    def logits(name):
        return models[name](x) if name == "ours" else models[name](input_ids=x).logits

    # same function, same gradients: otherwise the comparison means nothing
    losses, grads = {}, {}
    for name in models:
        loss = next_token_loss(logits(name), y)
        loss.backward()
        losses[name] = loss.item()
        grads[name] = models[name].lm_head.weight.grad.clone()  # tied to wte in both
        models[name].zero_grad(set_to_none=True)
    loss_diff = max(abs(losses["ours"] - losses[name]) for name in models)
    grad_diff = max((grads["ours"] - grads[name]).abs().max().item() for name in models)

    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()} \
        if args.optimizer else {}

    def train_step(name):
        loss = next_token_loss(logits(name), y)
        loss.backward()
        if name in opts:
            opts[name].step()
        models[name].zero_grad(set_to_none=True)

    n_params = sum(p.numel() for p in ours.parameters())
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    print(f"preset {args.preset}: {preset}, {n_params / 1e6:.1f}M params")
    print(f"batch {args.batch} x {args.seq_len} tokens, fp32, forward + backward"
          f"{' + AdamW step' if args.optimizer else ' (no optimizer step)'}, HF attn_implementation={args.hf_attn}")
    print(f"initial loss ours {losses['ours']:.6f} HF {losses['hf']:.6f} (max |diff| over the models "
          f"{loss_diff:.1e}); max |grad diff| on wte {grad_diff:.1e}")
    if loss_diff > 1e-4 or grad_diff > 1e-4:
        raise SystemExit("the models disagree: the weights were not loaded identically")

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
    labels = {"ours": "ours (minigpt_rlhf GPT)", "hf": f"transformers GPT2LMHeadModel ({args.hf_attn})",
              "hf_fused": f"transformers GPT2LMHeadModel ({args.hf_attn}), torch's fused GELU"}
    print()
    print("| model | median ms/step | min ms/step | tokens/s |")
    print("|---|---:|---:|---:|")
    for name in models:
        print(f"| {labels[name]} | {1000 * statistics.median(per_step[name]):.1f} | "
              f"{1000 * min(per_step[name]):.1f} | {tps[name]:.0f} |")
    print()
    print(f"ours vs transformers: {tps['ours'] / tps['hf']:.2f}x")
    if "hf_fused" in tps:
        print(f"ours vs transformers with the fused GELU: {tps['ours'] / tps['hf_fused']:.2f}x "
              f"(everything but the GELU); the GELU alone: {tps['hf_fused'] / tps['hf']:.2f}x")
    return tps


if __name__ == "__main__":
    main(parse_args())
