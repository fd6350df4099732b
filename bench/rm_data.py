"""How much better does the reward model get with more comparisons, and what does PPO gain from it?

    python bench/rm_data.py --out_dir=out                                   # needs out/sft/model.pt
    python bench/rm_data.py --out_dir=out --sizes=500,1000,2000,4000 --ppo  # + a PPO run on each RM

The default run's RM is trained on ~1000 prompts' comparisons; this measures what more would buy: the RM's
held-out accuracy against the labels and against the gold order per training-set size, and with --ppo the gold
win rate of PPO against each RM.

Prompts: the world generator is run again with a larger RM split of --pool prompts. Each family draws its
prompts from its own seeded stream, so the larger split holds every prompt of data/rm_prompts.jsonl (the split
is sorted, so not as its first lines); prompts that are also
in data/ppo_prompts.jsonl are dropped (eval and SFT prompts are kept out by the generator itself).
Comparisons are collected once from the SFT model with train_rm.py's defaults (`comparisons.collect_comparisons`: K in
[4, 9] distinct samples, the simulated labeler calibrated to 72.6 % agreement). A fixed set of --n_val
prompts is held out; each RM is trained by `train_rm.main` (train_rm.py's default Config: up to 6 epochs with
early stopping, 4 prompts per step, normalised) on the first N of the other prompts, so the training sets are
nested, and evaluated on the same held-out comparisons (`--val_comparisons`). With --ppo, `train_ppo.main` (the
default config) then runs on that RM and the SFT model, and reports the gold win rate on the held-out prompts.

Everything is written under --work_dir: comparisons, one folder per size (sft/ is a copy, rm/, ppo/), and
results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_ppo  # noqa: E402
import train_rm  # noqa: E402
from minigpt_rlhf import world  # noqa: E402
from minigpt_rlhf.checkpoint import load_checkpoint, load_model  # noqa: E402
from minigpt_rlhf.common import compute_init  # noqa: E402
from minigpt_rlhf.comparisons import collect_comparisons, write_comparisons  # noqa: E402
from minigpt_rlhf.data import read_prompts  # noqa: E402
from minigpt_rlhf.judge import resolve_labeler  # noqa: E402
from minigpt_rlhf.tokenizer import get_tokenizer  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default="out", help="holds sft/model.pt (from train_sft.py)")
    p.add_argument("--work_dir", default="out_rm_data", help="where comparisons, RMs and PPO runs go")
    p.add_argument("--pool", type=int, default=5200, help="RM prompts generated (before dropping PPO prompts)")
    p.add_argument("--n_val", type=int, default=400, help="held-out prompts, the same for every size")
    p.add_argument("--sizes", default="500,1000,2000,4000", help="training prompts of each RM (nested subsets)")
    p.add_argument("--ppo", action="store_true", help="run train_ppo.py's default on each RM")
    p.add_argument("--seed", type=int, default=1337)
    return p.parse_args(argv)


def prompt_pool(n: int, seed: int, data_dir: Path) -> list[dict]:
    """The world's RM split at n prompts, minus the prompts of data_dir's PPO split."""
    rows = world.generate_world(seed, sizes={"rm": n}).splits["rm"]
    ppo = {r["prompt"] for r in read_prompts(data_dir / "ppo_prompts.jsonl")}
    default_rm = {r["prompt"] for r in read_prompts(data_dir / "rm_prompts.jsonl")}
    pool = [r for r in rows if r["prompt"] not in ppo]
    if not default_rm <= {r["prompt"] for r in pool}:
        raise SystemExit(f"the generated RM split does not contain {data_dir / 'rm_prompts.jsonl'}: was data/ made "
                         f"with another seed than --seed={seed}?")
    return pool


def main(args):
    t0 = time.time()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    cmp_path, val_path = work / "comparisons.jsonl", work / "val_comparisons.jsonl"
    sft_path = Path(args.out_dir) / "sft" / "model.pt"
    if not cmp_path.exists():
        pool = prompt_pool(args.pool, args.seed, ROOT / "data")
        rt = compute_init("cpu", "auto", args.seed)
        tok = get_tokenizer()
        sft = load_model(load_checkpoint(sft_path, "SFT checkpoint", "Run `python train_sft.py` first."), tok,
                         str(sft_path), "cpu")
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(len(pool))
        # more than needed: prompts whose samples are all repeats or empty drop out (5 % of them for the
        # laptop SFT model, 9 % for a 3M-parameter one, which repeats itself more)
        rows = [pool[i] for i in order[: int(1.15 * (args.n_val + max(sizes)))]]
        print(f"collecting comparisons for {len(rows)} of {len(pool)} prompts ...", flush=True)
        rm_config = train_rm.Config()
        labeler = resolve_labeler(rm_config.labeler, [r["prompt"] for r in rows])  # the world's, by default
        comparisons, temperature = collect_comparisons(sft, tok, rows, rm_config, rt, rng, labeler)
        # collect_comparisons keeps the order of `rows` (it drops prompts with fewer than 2 responses)
        write_comparisons(val_path, comparisons[: args.n_val])
        write_comparisons(cmp_path, comparisons[args.n_val: args.n_val + max(sizes)])
        print(f"collected in {time.time() - t0:.0f}s; labeler temperature {temperature:.4f}", flush=True)
    train_all = cmp_path.read_text().splitlines()
    results = []
    for n in sizes:
        if n > len(train_all):
            print(f"skipping {n}: only {len(train_all)} training prompts")
            continue
        run = work / f"size_{n}"
        (run / "sft").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sft_path, run / "sft" / "model.pt")
        subset = run / "comparisons.jsonl"
        subset.write_text("\n".join(train_all[:n]) + "\n")
        cfg = train_rm.Config(out_dir=str(run), data_dir=str(ROOT / "data"), comparisons=str(subset),
                              val_comparisons=str(val_path), seed=args.seed)
        rm = train_rm.main(cfg)
        row = {"train_prompts": n, "train_pairs": rm["n_train_pairs"], "val_prompts": rm["n_val_prompts"],
               "accuracy_vs_labels": rm["accuracy_vs_labels"], "accuracy_vs_gold": rm["accuracy_vs_gold"],
               "labeler_agreement": rm["labeler_agreement"], "rm_time_s": rm["wall_time_s"]}
        if args.ppo:
            ppo = train_ppo.main(train_ppo.Config(out_dir=str(run), data_dir=str(ROOT / "data"), seed=args.seed))
            row.update(win_rate=ppo["win_rate_vs_sft"], win_rate_ci95=ppo["win_rate_ci95"],
                       gold_sft=ppo["gold_score_sft"], gold_ppo=ppo["gold_score_ppo"], kl=ppo["kl_from_sft"])
        results.append(row)
        (work / "results.json").write_text(json.dumps(results, indent=1))

    print(f"\n{results[0]['val_prompts'] if results else 0} held-out prompts; SFT {sft_path}; "
          f"total {time.time() - t0:.0f}s\n")
    print("| train prompts | pairs | vs labels | vs gold | labeler agreement | RM stage s |"
          + (" PPO win rate (95 % CI) | gold SFT -> PPO | KL |" if args.ppo else ""))
    print("|---:|---:|---:|---:|---:|---:|" + ("---|---|---:|" if args.ppo else ""))
    for r in results:
        line = (f"| {r['train_prompts']} | {r['train_pairs']} | {r['accuracy_vs_labels']:.3f} | "
                f"{r['accuracy_vs_gold']:.3f} | {r['labeler_agreement']:.3f} | {r['rm_time_s']:.0f} |")
        if args.ppo:
            lo, hi = r["win_rate_ci95"]
            line += (f" {r['win_rate']:.3f} ({lo:.3f}-{hi:.3f}) | {r['gold_sft']:.3f} -> {r['gold_ppo']:.3f} | "
                     f"{r['kl']:.2f} |")
        print(line)
    if len(results) >= 2:  # least-squares slope of accuracy against log2(prompts)
        x = np.array([math.log2(r["train_prompts"]) for r in results])
        for key in ("accuracy_vs_labels", "accuracy_vs_gold"):
            slope = np.polyfit(x, np.array([r[key] for r in results]), 1)[0]
            print(f"{key}: {slope:+.3f} per doubling of the training prompts")
    return results


if __name__ == "__main__":
    main(parse_args())
