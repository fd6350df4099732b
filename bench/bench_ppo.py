"""Where a PPO iteration's time goes: rollout generation, scoring by the four models, advantages, update.

    python bench/bench_ppo.py                       # laptop default config, checkpoints from out/ if present
    python bench/bench_ppo.py --iterations=5 --threads=1
    python bench/bench_ppo.py --compare_cut          # also without cutting all-padding columns, side by side
    python bench/bench_ppo.py --preset=gpu --device=cuda --compile=True --iterations=1   # GPT-2-small shape

Runs the same steps as train_ppo.py's loop (minigpt_rlhf.rollout.make_rollout, then compute_advantages and
train_ppo.ppo_update) on the config of a train_ppo.py preset (laptop default), under the same autocast and,
with --compile=True, through the same compiled modules, but times each part on its own:

  generate   batched KV-cache sampling of rollout_batch_size responses (sampling.generate)
  policy     the full forward that recomputes the old log-probs (same minibatches as the first epoch)
  ref        the reference (SFT) log-probs          value   V(s_t) from the value model
  rm         the reward model's score at EOS        adv     KL-shaped rewards, GAE, whitening
  update     ppo_epochs x (rollout_batch_size / minibatch_size) gradient steps (+ the ptx term)

With out/sft/model.pt and out/rm/model.pt (after `python train_ppo.py` or train_sft + train_rm) the models are
the trained ones, so responses have their real lengths; without them, randomly initialised models of the
preset's shape, whose responses rarely emit EOS (so generation runs the full max_new_tokens: an upper bound).
Reported: each part's seconds and share of the iteration. Timings are medians over --iterations,
after one untimed warm-up iteration (its time, torch.compile's included, is printed too); the foreign-load
column says how busy the rest of the machine was.

Minibatches are cut to the columns that hold a real token of one of their rows (rollout.padding_span). With
--compare_cut every round also runs one iteration that keeps every column (padding_span replaced by the full
span), so the two are timed alternately under the same conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_generate import ForeignLoad  # noqa: E402

import train_ppo  # noqa: E402
import train_sft  # noqa: E402
from minigpt_rlhf import ppo  # noqa: E402
from minigpt_rlhf import rollout as R  # noqa: E402
from minigpt_rlhf.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from minigpt_rlhf.common import compute_init, make_scaler, maybe_compile  # noqa: E402
from minigpt_rlhf.data import TokenStream, encode_prompts, read_prompts  # noqa: E402
from minigpt_rlhf.model import GPT, GPTConfig, configure_optimizer, swap_unembedding  # noqa: E402
from minigpt_rlhf.rollout import Rollout, compute_advantages, policy_logprobs, value_estimates  # noqa: E402
from minigpt_rlhf.sampling import banned_token_ids, generate  # noqa: E402
from minigpt_rlhf.tokenizer import get_tokenizer  # noqa: E402

PARTS = ["generate", "policy", "ref", "value", "rm", "adv", "update"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default=str(ROOT / "out"), help="where sft/model.pt and rm/model.pt are")
    p.add_argument("--iterations", type=int, default=3, help="timed iterations (after one warm-up)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--compare_cut", action="store_true", help="also time iterations that keep all-pad columns")
    p.add_argument("--preset", choices=sorted(train_ppo.PRESETS), default="laptop",
                   help="train_ppo.py preset (models shaped by train_sft.py's preset of the same name)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast on CUDA, as train_ppo.py)")
    p.add_argument("--compile", default="False", help="True: update and scoring through torch.compile, as "
                   "train_ppo.py --compile=True")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    return p.parse_args(argv)


def load_models(out_dir, tok, preset="laptop"):
    sft_path, rm_path = os.path.join(out_dir, "sft", "model.pt"), os.path.join(out_dir, "rm", "model.pt")
    if os.path.exists(sft_path) and os.path.exists(rm_path):
        sft, rm = load_checkpoint(sft_path), load_checkpoint(rm_path)
        make = [lambda: model_from_checkpoint(sft, tok, dropout=0.0)] * 2 + \
               [lambda: model_from_checkpoint(rm, tok, dropout=0.0)] * 2
        source = f"trained checkpoints from {out_dir}"
    else:
        c = train_sft.Config(**train_sft.PRESETS[train_ppo.PRESETS[preset].get("upstream_preset", preset)])
        cfg = GPTConfig(block_size=c.block_size, vocab_size=((tok.n_vocab + 63) // 64) * 64, n_layer=c.n_layer,
                        n_head=c.n_head, n_embd=c.n_embd, dropout=0.0)
        make = [lambda: GPT(cfg)] * 2 + [lambda: swap_unembedding(GPT(cfg))] * 2
        source = (f"random {preset}-shaped models ({c.n_layer} layers x {c.n_embd}; no checkpoints in {out_dir}), "
                  "whose responses rarely end: generation runs max_new_tokens")
    policy, ref, rm, value = (m().eval() for m in make)  # dropout off, as train_ppo.py's models
    return policy, ref.requires_grad_(False), rm.requires_grad_(False), value, source


def timed(times, name, fn, *args):
    sync()
    t0 = time.perf_counter()
    out = fn(*args)
    sync()  # CUDA kernels run asynchronously: wait for them before reading the clock
    times[name] = times.get(name, 0.0) + time.perf_counter() - t0
    return out


def sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def iteration(policy, ref, rm, value_model, optimizer, scaler, prompts, corpus, config, tok, banned, rng, gen, rt,
              train_policy=None, train_value=None):
    """One PPO iteration, as train_ppo.main runs it (make_rollout inlined to time each model). train_policy,
    train_value: the modules the update runs through (torch.compile'd ones), which also score the rollouts."""
    train_policy = policy if train_policy is None else train_policy
    train_value = value_model if train_value is None else train_value
    times = {}
    batch = [prompts[i]["ids"] for i in rng.choice(len(prompts), config.rollout_batch_size, replace=False)]
    with torch.no_grad(), rt.autocast():
        s = timed(times, "generate", lambda: generate(policy, batch, config.max_new_tokens, tok.eos_id, tok.pad_id,
                                                      temperature=config.temperature, n_vocab=tok.n_vocab,
                                                      generator=gen))
        tokens, mask, P = s.tokens, s.attention_mask, s.prompt_tokens.size(1)
        N = tokens.size(1) - P
        parts = {k: [] for k in ("policy", "ref", "value", "rm")}
        for i in range(0, tokens.size(0), config.minibatch_size):
            start, n = R.padding_span(mask[i: i + config.minibatch_size], P)
            t, m = tokens[i: i + config.minibatch_size, start: P + n], mask[i: i + config.minibatch_size, start: P + n]
            p, T, back = P - start, config.temperature, (0, N - n)
            parts["policy"].append(F.pad(timed(times, "policy", policy_logprobs, train_policy, t, m, p, T, banned)
                                         .float(), back))
            parts["ref"].append(F.pad(timed(times, "ref", policy_logprobs, ref, t, m, p, T, banned).float(), back))
            parts["value"].append(F.pad(timed(times, "value", value_estimates, train_value, t, m, p), back))
            scores = timed(times, "rm", rm, t, m).float()
            parts["rm"].append(scores.gather(1, ppo.last_token_index(m)[:, None]).squeeze(1))
    rm_scores = torch.cat(parts["rm"])
    r = Rollout(tokens=tokens, attention_mask=mask, prompt_len=P, response_mask=s.response_mask.float(),
                logprobs=torch.cat(parts["policy"]), ref_logprobs=torch.cat(parts["ref"]),
                values=torch.cat(parts["value"]), rm_scores=rm_scores, ended=s.ended,
                scores=torch.where(s.ended, rm_scores, torch.full_like(rm_scores, config.no_eos_penalty)))
    r = timed(times, "adv", lambda: compute_advantages(r, config.kl_coef, config.gamma, config.lam))
    stats = timed(times, "update", lambda: train_ppo.ppo_update(train_policy, train_value, optimizer, scaler, r, config,
                                                                banned, corpus, rng, rt, config.ptx_coef))
    times["response_tokens"] = float(r.response_mask.sum()) / r.tokens.size(0)
    times["first_ratio_mean"], times["first_approx_kl"] = stats["first_ratio_mean"], stats["first_approx_kl"]
    return times


def main(args):
    torch.set_num_threads(args.threads)
    config = train_ppo.Config(**train_ppo.PRESETS[args.preset])
    rt = compute_init(args.device, "auto", config.seed)
    tok = get_tokenizer()
    policy, ref, rm, value_model, source = (m.to(rt.device) if isinstance(m, torch.nn.Module) else m
                                            for m in load_models(args.out_dir, tok, args.preset))
    banned = banned_token_ids(policy.config.vocab_size, tok.n_vocab, tok.pad_id, rt.device)
    optimizer = configure_optimizer([policy, value_model], config.lr, betas=(0.9, 0.999), eps=config.adam_eps,
                                    fused=rt.device.type == "cuda")  # as train_ppo.py
    train_policy, train_value = maybe_compile(policy, args.compile, rt), maybe_compile(value_model, args.compile, rt)
    prompts, _ = encode_prompts(tok, read_prompts(ROOT / "data" / "ppo_prompts.jsonl"), config.max_prompt_len, "")
    corpus = TokenStream(tok, ROOT / "data" / "corpus_train.txt")
    rng, gen = np.random.default_rng(0), torch.Generator(device=rt.device).manual_seed(0)
    gpu = f" {torch.cuda.get_device_name()}" if rt.device.type == "cuda" else ""
    print(f"torch {torch.__version__}, device {rt.device}{gpu}, dtype {rt.dtype}, compile {args.compile}; "
          f"preset {args.preset}; models: {source}; {config.rollout_batch_size} rollouts x up to "
          f"{config.max_new_tokens} tokens, {config.ppo_epochs} epochs of minibatch {config.minibatch_size}, "
          f"ptx_coef {config.ptx_coef}; {args.threads} thread(s)", flush=True)
    args_ = (policy, ref, rm, value_model, optimizer, make_scaler(rt), prompts, corpus, config, tok, banned, rng,
             gen, rt, train_policy, train_value)
    cut = R.padding_span
    modes = {"cut": cut, "all columns": lambda mask, P: (0, mask.size(1) - P)}
    if not args.compare_cut:
        modes.pop("all columns")
    t0 = time.perf_counter()
    warm = iteration(*args_)  # warm-up (and torch.compile's compilation)
    warmup_s = time.perf_counter() - t0
    print(f"warm-up iteration {warmup_s:.1f} s (torch.compile's compilation included); first minibatch: "
          f"ratio mean {warm['first_ratio_mean']:.6f}, approx KL {warm['first_approx_kl']:.2e}")
    rows = {mode: [] for mode in modes}
    for _ in range(args.iterations):
        for mode, span in modes.items():
            R.padding_span = span
            with ForeignLoad() as load:
                rows[mode].append(iteration(*args_))
            rows[mode][-1]["foreign"] = load.cores if load.cores is not None else float("nan")
    R.padding_span = cut
    totals, figures = {}, {}
    for mode, runs in rows.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        total = totals[mode] = statistics.median(sum(r[k] for k in PARTS) for r in runs)
        print(f"\n{mode}:\n| part | median s | share of iteration |\n|---|---:|---:|")
        for k in PARTS:
            print(f"| {k} | {med[k]:.3f} | {med[k] / total:.1%} |")
        scoring = sum(med[k] for k in ("policy", "ref", "value", "rm"))
        print(f"| **iteration** | **{total:.3f}** | 100% |")
        print(f"\nscoring (policy + ref + value + rm): {scoring:.3f} s; "
              f"generation share {med['generate'] / total:.1%}; "
              f"{config.rollout_batch_size / total:.1f} samples/s; mean response "
              f"{med['response_tokens']:.1f} tokens; foreign load per iteration (cores): "
              + ", ".join(f"{r['foreign']:.2f}" for r in runs))
        figures[mode] = dict(median_s=med, iteration_s=total, scoring_s=scoring,
                             generation_share=med["generate"] / total, samples_per_s=config.rollout_batch_size / total)
    if len(totals) == 2:
        print(f"\ncutting all-pad columns: iteration {totals['all columns'] / totals['cut']:.2f}x faster")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, device=str(rt.device) + gpu, dtype=str(rt.dtype),
                           preset=args.preset, compile=args.compile, models=source, warmup_iteration_s=warmup_s,
                           first_ratio_mean=warm["first_ratio_mean"], first_approx_kl=warm["first_approx_kl"],
                           **figures), f, indent=2)
    return figures

if __name__ == "__main__":
    main(parse_args())
