"""Tokens/s of batched sampling: ours with the KV cache, ours recomputing the whole sequence every step,
and Hugging Face transformers' GPT2LMHeadModel.generate (with its own KV cache), in one run, on the same
config and the SAME weights.

The weights come from a randomly initialised transformers GPT-2 saved to a temporary folder and loaded into
ours with `from_pretrained`, so both models compute the same function (checked below: the logits of the
padded prompt batch agree to float precision). Prompts have mixed lengths and are left-padded; HF gets the
attention_mask, and derives the same position ids from it as we do.

Every method generates exactly --new_tokens tokens per row: ours is given an EOS id outside the vocabulary
(it can never be sampled), HF is given eos_token_id=None; the script checks the output lengths.

    python bench/bench_generate.py                       # laptop config, batch 16, 128 new tokens
    python bench/bench_generate.py --greedy              # argmax decoding instead of sampling
    python bench/bench_generate.py --preset=gpt2 --batch=4 --new_tokens=32 --repeats=3
    python bench/bench_generate.py --hf_attn=eager       # HF's eager attention instead of SDPA
    taskset -c 0 python bench/bench_generate.py --threads=1   # one thread, pinned to core 0

Timing: one warm-up call per method, then --repeats rounds; in each round every method runs once (so slow
drift of the machine affects all of them alike). Reported: the median over the rounds in which other
processes used at most --max_load cores of the CPUs we run on (the others are printed and discarded).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minigpt_rlhf.model import from_pretrained  # noqa: E402
from minigpt_rlhf.sampling import generate, left_pad  # noqa: E402

PRESETS = {
    # laptop: the size of our default runs
    "laptop": dict(n_layer=4, n_head=4, n_embd=128, vocab_size=2048, block_size=256),
    # gpt2: GPT-2 small's shape (124M parameters with the 50257-token vocabulary)
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024),
}


class ForeignLoad:
    """CPU time used by OTHER processes while we ran, in cores (0 = the machine was ours alone), from
    /proc/stat minus our own process time: `cores` on the CPUs this process may run on (all of them, unless
    pinned with e.g. `taskset -c 0`), `machine` on the whole machine. On a 2-core machine, 2 intra-op threads
    slow down many times over when another process takes a core, so a figure measured under foreign load
    is not comparable. Pinned, only load on our own CPUs competes for them (the other cores still share the
    caches and memory bandwidth)."""

    def __enter__(self):
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        self.busy0, self.own0, self.t0 = self._busy(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cores = self.machine = None
        if self.busy0 is not None:
            busy, own, dt = self._busy(), time.process_time() - self.own0, time.perf_counter() - self.t0
            self.cores = max(busy[0] - self.busy0[0] - own, 0.0) / dt
            self.machine = max(busy[1] - self.busy0[1] - own, 0.0) / dt

    def _busy(self):
        """Seconds busy (all but idle and iowait) on our CPUs and on the whole machine, or None."""
        ours = total = 0
        try:
            with open("/proc/stat") as f:
                for line in f:
                    name, *v = line.split()
                    if not name.startswith("cpu"):
                        break
                    v = [int(x) for x in v[:8]]
                    busy = sum(v) - v[3] - v[4]
                    if name == "cpu":
                        total = busy
                    elif self.cpus is None or int(name[3:]) in self.cpus:
                        ours += busy
        except OSError:
            return None
        return ours / os.sysconf("SC_CLK_TCK"), total / os.sysconf("SC_CLK_TCK")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="laptop")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--new_tokens", type=int, default=128)
    p.add_argument("--min_prompt", type=int, default=8, help="shortest prompt (tokens)")
    p.add_argument("--max_prompt", type=int, default=40, help="longest prompt (tokens)")
    p.add_argument("--greedy", action="store_true", help="argmax decoding (default: sampling at T=1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--max_load", type=float, default=0.05,
                   help="rounds in which other processes used more cores than this on our CPUs are discarded")
    p.add_argument("--hf_attn", choices=["sdpa", "eager"], default="sdpa",
                   help="attn_implementation of the transformers model")
    p.add_argument("--methods", default="cache,recompute,hf",
                   help="comma-separated subset of cache,recompute,hf")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_models(preset: dict, hf_attn: str, folder: Path):
    """A random transformers GPT-2 and our GPT loaded from its saved weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=preset["vocab_size"], n_positions=preset["block_size"], n_embd=preset["n_embd"],
        n_layer=preset["n_layer"], n_head=preset["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=None, eos_token_id=None, pad_token_id=0,
    )
    hf = GPT2LMHeadModel(cfg)
    hf.save_pretrained(folder)
    hf = GPT2LMHeadModel.from_pretrained(folder, attn_implementation=hf_attn).eval()
    ours = from_pretrained(folder).eval()
    return ours, hf


def make_prompts(n: int, lo: int, hi: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    lengths[0], lengths[-1] = lo, hi  # make sure the batch really has mixed lengths
    # ids from 1: id 0 is PAD
    return [torch.randint(1, vocab, (L,), generator=g).tolist() for L in lengths]


def check_same_function(ours, hf, tokens, mask) -> float:
    """Max |logit difference| at real prompt positions: the two models must be the same function."""
    with torch.no_grad():
        a = ours(tokens, attention_mask=mask)
        pos = (mask.long().cumsum(1) - 1).clamp(min=0)
        b = hf(input_ids=tokens, attention_mask=mask, position_ids=pos).logits
    real = mask.bool()
    return (a[real] - b[real]).abs().max().item()


def main(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import transformers

    preset = PRESETS[args.preset]
    V = preset["vocab_size"]
    pad_id, eos_id = 0, V  # eos_id == V is outside the vocabulary: never sampled, so all steps run
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    with tempfile.TemporaryDirectory() as tmp:
        ours, hf = build_models(preset, args.hf_attn, Path(tmp))
    prompts = make_prompts(args.batch, args.min_prompt, args.max_prompt, V, args.seed)
    tokens, mask = left_pad(prompts, pad_id)
    diff = check_same_function(ours, hf, tokens, mask)

    n_params = sum(p.numel() for p in ours.parameters())
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, CPUs {sorted(os.sched_getaffinity(0))} of {os.cpu_count()}")
    print(f"preset {args.preset}: {preset}, {n_params / 1e6:.1f}M params")
    print(f"batch {args.batch}, prompt lengths {min(map(len, prompts))}..{max(map(len, prompts))} "
          f"(left-padded to {tokens.size(1)}), {args.new_tokens} new tokens, "
          f"{'greedy' if args.greedy else 'sampling T=1, no top-k'}, HF attn_implementation={args.hf_attn}")
    print(f"max |logits ours - HF| on the prompt batch: {diff:.2e}")
    if diff > 1e-3:
        raise SystemExit("the two models disagree: the weights were not loaded identically")

    def run_ours(use_cache):
        def f():
            s = generate(ours, prompts, args.new_tokens, eos_id=eos_id, pad_id=pad_id, greedy=args.greedy,
                         use_cache=use_cache, generator=torch.Generator().manual_seed(args.seed))
            assert s.response.shape == (args.batch, args.new_tokens) and bool(s.response_mask.all()), \
                "ours stopped early"
        return f

    def run_hf():
        gen_kwargs = dict(do_sample=False) if args.greedy else dict(do_sample=True, temperature=1.0, top_k=0,
                                                                     top_p=1.0)
        torch.manual_seed(args.seed)
        with torch.no_grad():
            out = hf.generate(input_ids=tokens, attention_mask=mask, max_new_tokens=args.new_tokens,
                              min_new_tokens=args.new_tokens, eos_token_id=None, pad_token_id=pad_id,
                              use_cache=True, **gen_kwargs)
        assert out.shape == (args.batch, tokens.size(1) + args.new_tokens), f"HF stopped early: {out.shape}"

    fns = {"cache": run_ours(True), "recompute": run_ours(False), "hf": run_hf}
    labels = {"cache": "ours, KV cache", "recompute": "ours, recompute (use_cache=False)",
              "hf": f"transformers generate ({args.hf_attn}, KV cache)"}
    times = {m: [] for m in methods}
    for m in methods:  # warm-up
        fns[m]()
    kept = 0
    for r in range(args.repeats):
        with ForeignLoad() as load:
            t = {}
            for m in methods:
                t0 = time.perf_counter()
                fns[m]()
                t[m] = time.perf_counter() - t0
        ok = load.cores is None or load.cores <= args.max_load
        if ok:
            kept += 1
            for m in methods:
                times[m].append(t[m])
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{m} {t[m]:.3f}s" for m in methods)
              + (f"; other processes used {load.cores:.2f} cores on our CPUs {sorted(load.cpus or [])}, "
                 f"{load.machine:.2f} on the machine" if load.cores is not None else "")
              + ("" if ok else " (discarded)"), flush=True)
    if not kept:
        raise SystemExit(f"every round had foreign load above --max_load={args.max_load}: no figures")
    print(f"{kept} of {args.repeats} rounds kept")

    n_tok = args.batch * args.new_tokens
    tps = {m: n_tok / statistics.median(times[m]) for m in methods}
    print()
    print("| method | median s | min s | tokens/s (median) | ms/step |")
    print("|---|---:|---:|---:|---:|")
    for m in methods:
        med = statistics.median(times[m])
        print(f"| {labels[m]} | {med:.3f} | {min(times[m]):.3f} | {tps[m]:.0f} | {1000 * med / args.new_tokens:.2f} |")
    print()
    if "cache" in tps and "recompute" in tps:
        print(f"KV cache vs recompute: {tps['cache'] / tps['recompute']:.2f}x")
    if "cache" in tps and "hf" in tps:
        print(f"ours (KV cache) vs transformers: {tps['cache'] / tps['hf']:.2f}x")
        # the two run back to back in each round, so their ratio within a round is less noisy
        per_round = sorted(h / c for h, c in zip(times["hf"], times["cache"]))
        print(f"  per round: median {statistics.median(per_round):.2f}x, "
              f"range {per_round[0]:.2f}x to {per_round[-1]:.2f}x over {len(per_round)} rounds")
    return tps


if __name__ == "__main__":
    main(parse_args())
