"""How long the project's BPE trainer takes: the default vocabulary (2048 tokens on data/corpus_train.txt,
what `python -m minigpt_rlhf.world` runs) and larger corpora made by repeating it with shuffled lines.

    python bench/bench_bpe.py                   # the default vocabulary, then 2x and 4x the corpus
    python bench/bench_bpe.py --sizes=1 --vocab_size=4096

Reported per corpus size: megabytes, vocabulary size and seconds of training. The first row also checks that
the trainer reproduces data/tokenizer.bpe exactly, so its time is that of the real thing.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigpt_rlhf.tokenizer import DEFAULT_BPE_PATH, load_bpe, train_bpe  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=str(ROOT / "data" / "corpus_train.txt"))
    p.add_argument("--vocab_size", type=int, default=2048)
    p.add_argument("--sizes", default="1,2,4", help="corpus multiples to time (lines shuffled for each copy)")
    args = p.parse_args(argv)

    text = Path(args.corpus).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    print("| corpus | MB | vocab | seconds | same as data/tokenizer.bpe |")
    print("|---|---:|---:|---:|---|")
    for k in (int(s) for s in args.sizes.split(",")):
        rng = random.Random(k)
        copies = [text] + ["".join(rng.sample(lines, len(lines))) for _ in range(k - 1)]
        corpus = "".join(copies)
        t0 = time.perf_counter()
        ranks = train_bpe(corpus, args.vocab_size)
        seconds = time.perf_counter() - t0
        same = "-"
        if k == 1 and args.vocab_size == 2048 and Path(args.corpus).resolve() == ROOT / "data" / "corpus_train.txt":
            same = "yes" if ranks == load_bpe(DEFAULT_BPE_PATH) else "NO"
        print(f"| {k}x {Path(args.corpus).name} | {len(corpus.encode()) / 1e6:.1f} | {len(ranks)} | "
              f"{seconds:.1f} | {same} |", flush=True)


if __name__ == "__main__":
    main()
