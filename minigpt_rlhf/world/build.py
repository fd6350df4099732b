"""Generate every data file of the instruction world from one seed, and the project tokenizer.

    python -m minigpt_rlhf.world                      # writes data/ (seed 1337), then data/tokenizer.bpe
    python -m minigpt_rlhf.world --scale=0.05 --no_tokenizer --out_dir=/tmp/w   # a small, fast copy

The same seed gives the same bytes: every random choice comes from a `random.Random` seeded by a
string naming the seed and the purpose, never from global state, hash() or set order.
"""

import argparse
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from minigpt_rlhf.world.corpus import make_corpus
from minigpt_rlhf.world.family import QUALITY_MODES, fits
from minigpt_rlhf.world.gold import FAMILIES, FAMILY_BY_NAME, gold_score

# Share of each simulated-labeler quality mode among the SFT demonstrations (see docs/world.md).
# good: correct, concise, within constraints, ends cleanly. verbose: the good answer padded with filler.
# mistake: well formed but wrong (fact, count, label, word; rude or compliant on harmful requests).
# ignore: correct content that breaks the prompt's explicit constraint (on harmful requests: a hint after
# the refusal). The SFT model imitates this mixture; RLHF's job is to keep only the first mode. The good mode
# is a minority (a fifth) and never the most frequent one, so sampling SFT at a lower temperature (sharpening
# towards its most frequent answers) does not find it, while the labelers' rankings still prefer it: labelers
# write worse than they judge, as human reference summaries lost to RLHF policies in Stiennon et al. 2020.
QUALITY_PROPORTIONS = {"good": 0.20, "verbose": 0.35, "mistake": 0.15, "ignore": 0.30}

# Prompts per split, spread evenly over the families (eval: 30 per family).
SPLIT_SIZES = {"eval": 240, "sft_train": 4000, "sft_val": 300, "rm": 1200, "ppo": 2000}
SPLIT_FILES = {"sft_train": "sft_train.jsonl", "sft_val": "sft_val.jsonl", "rm": "rm_prompts.jsonl",
               "ppo": "ppo_prompts.jsonl", "eval": "eval_prompts.jsonl"}
DEMO_SPLITS = ["sft_train", "sft_val"]
CORPUS_CHARS = {"corpus_train.txt": 2_000_000, "corpus_val.txt": 100_000}
MIN_EVAL_PER_FAMILY = 2


@dataclass
class World:
    """All generated data: split name -> records, corpus file name -> text."""

    splits: dict[str, list[dict]] = field(default_factory=dict)
    corpora: dict[str, str] = field(default_factory=dict)


def _per_family(total: int) -> list[int]:
    base, extra = divmod(total, len(FAMILIES))
    return [base + (i < extra) for i in range(len(FAMILIES))]


def _mode_quota(n: int) -> list[str]:
    """Exactly round(share · n) demonstrations per mode (largest remainder), in mode order."""
    raw = {m: QUALITY_PROPORTIONS[m] * n for m in QUALITY_MODES}
    counts = {m: int(v) for m, v in raw.items()}
    by_remainder = sorted(QUALITY_MODES, key=lambda m: (-(raw[m] - counts[m]), QUALITY_MODES.index(m)))
    for m in by_remainder[: n - sum(counts.values())]:
        counts[m] += 1
    return [m for m in QUALITY_MODES for _ in range(counts[m])]


def _core(p: dict, prompt: str) -> str:
    """The prompt without its greeting prefix."""
    return prompt[len(p["prefix"]):]


def _unique_task(family, rng: random.Random, seen: set[str], held_out: set[str],
                 mode: str | None = None) -> tuple[dict, str]:
    """A task whose prompt is new, fits the length limit, and whose core is not a held-out core."""
    for _ in range(20000):
        p = family.sample(rng)
        prompt = family.render(p)
        if (prompt not in seen and _core(p, prompt) not in held_out and fits(prompt)
                and (mode is None or family.accepts(p, mode))):
            seen.add(prompt)
            return p, prompt
    raise RuntimeError(f"family {family.name} ran out of distinct prompts")


def _sort_key(record: dict) -> tuple:
    return FAMILIES.index(record["family"]), record["prompt"], record.get("response", "")


def generate_world(seed: int = 1337, scale: float = 1.0, sizes: dict[str, int] | None = None) -> World:
    """Generate the splits and corpora. `scale` shrinks every size (tests use ~0.02). `sizes` replaces some
    of SPLIT_SIZES (e.g. {"rm": 4800}, bench/rm_data.py). Each family draws each split's prompts from its own
    seeded stream, so a larger split holds every prompt of the default one (each family's draws begin with
    them; the written split is sorted). Splits are drawn in the order
    eval, sft_train, sft_val, rm, ppo: those before a resized split are unchanged, those after it change."""
    unknown = set(sizes or {}) - set(SPLIT_SIZES)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; the splits are {list(SPLIT_SIZES)}")
    totals = {**SPLIT_SIZES, **(sizes or {})}
    sizes = {name: max(len(FAMILIES), round(total * scale)) for name, total in totals.items()}
    sizes["eval"] = max(MIN_EVAL_PER_FAMILY * len(FAMILIES), sizes["eval"])
    world = World(splits={name: [] for name in SPLIT_SIZES})
    seen: set[str] = set()
    # Eval is drawn first. Its cores (prompts without the greeting) are then held out of every other
    # split and of the corpus, so no eval question is seen in training even with another greeting.
    held_out: set[str] = set()
    for split in SPLIT_SIZES:
        for family, n in zip([FAMILY_BY_NAME[f] for f in FAMILIES], _per_family(sizes[split])):
            rng = random.Random(f"world/{seed}/{split}/{family.name}")
            if split not in DEMO_SPLITS:
                for _ in range(n):
                    p, prompt = _unique_task(family, rng, seen, held_out)
                    world.splits[split].append({"prompt": prompt, "family": family.name})
                    if split == "eval":
                        held_out.add(_core(p, prompt))
                continue
            modes = _mode_quota(n)
            rng.shuffle(modes)
            for mode in modes:
                p, prompt = _unique_task(family, rng, seen, held_out, mode)
                world.splits[split].append({"prompt": prompt, "response": family.demo(p, mode, rng),
                                            "family": family.name, "quality": mode})
        world.splits[split].sort(key=_sort_key)

    banned = sorted(held_out)
    families = [FAMILY_BY_NAME[f] for f in FAMILIES]
    for name, n_chars in CORPUS_CHARS.items():
        rng = random.Random(f"world/{seed}/{name}")
        world.corpora[name] = make_corpus(rng, max(2000, round(n_chars * scale)), families, banned)
    return world


def write_world(world: World, out_dir: str | Path) -> dict[str, Path]:
    """Write the JSONL splits and corpus files; returns file name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, filename in SPLIT_FILES.items():
        path = out / filename
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in world.splits[split]]
        path.write_text("".join(lines), encoding="utf-8", newline="\n")
        paths[filename] = path
    for filename, text in world.corpora.items():
        path = out / filename
        path.write_text(text, encoding="utf-8", newline="\n")
        paths[filename] = path
    return paths


def demo_gold_means(records: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean gold score of demonstrations by quality mode and by family."""
    by_mode: dict[str, list[float]] = {m: [] for m in QUALITY_MODES}
    by_family: dict[str, list[float]] = {f: [] for f in FAMILIES}
    for r in records:
        score = gold_score(r["prompt"], r["response"])
        by_mode[r["quality"]].append(score)
        by_family[r["family"]].append(score)
    mean = lambda xs: statistics.fmean(xs) if xs else float("nan")
    return {k: mean(v) for k, v in by_mode.items()}, {k: mean(v) for k, v in by_family.items()}


def train_tokenizer(corpus_path: Path, out_path: Path, vocab_size: int) -> bool:
    """Train the project BPE on the training corpus; False if minigpt_rlhf.tokenizer is not available."""
    try:
        from minigpt_rlhf.tokenizer import save_bpe, train_bpe
    except ImportError as e:
        print(f"tokenizer: skipped ({e})")
        return False
    t0 = time.time()
    ranks = train_bpe(corpus_path.read_text(encoding="utf-8"), vocab_size)
    save_bpe(ranks, out_path)
    print(f"tokenizer: {len(ranks)} tokens -> {out_path} ({time.time() - t0:.1f}s)")
    return True


def main(argv: list[str] | None = None) -> World:
    parser = argparse.ArgumentParser(prog="python -m minigpt_rlhf.world", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1337, help="world seed")
    parser.add_argument("--out_dir", default="data/", help="where to write the files")
    parser.add_argument("--vocab_size", type=int, default=2048, help="BPE vocabulary size")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every split and corpus size")
    parser.add_argument("--no_tokenizer", action="store_true", help="skip training data/tokenizer.bpe")
    args = parser.parse_args(argv)

    t0 = time.time()
    world = generate_world(args.seed, args.scale)
    paths = write_world(world, args.out_dir)
    print(f"world seed {args.seed}, scale {args.scale}: generated in {time.time() - t0:.1f}s")
    for filename, path in paths.items():
        split = next((s for s, f in SPLIT_FILES.items() if f == filename), None)
        count = f"{len(world.splits[split]):5d} lines" if split else f"{len(world.corpora[filename]):>9,d} chars"
        print(f"  {str(path):32s} {count}  {path.stat().st_size / 1e6:.2f} MB")
    by_mode, by_family = demo_gold_means(world.splits["sft_train"])
    print("sft_train demonstrations, mean gold score by quality:")
    for mode, share in QUALITY_PROPORTIONS.items():
        print(f"  {mode:8s} {share:4.0%}  {by_mode[mode]:.3f}")
    print("  by family: " + ", ".join(f"{f} {v:.3f}" for f, v in by_family.items()))
    if not args.no_tokenizer:
        train_tokenizer(paths["corpus_train.txt"], Path(args.out_dir) / "tokenizer.bpe", args.vocab_size)
    return world
