"""Does the model read its prompt? In-context copying on the world's closed-QA questions.

    python bench/copy_probe.py                                   # out/base and out/sft of the default run
    python bench/copy_probe.py --checkpoints=out/sft/model.pt --n=500

Closed QA asks for a value that only the passage in the prompt states ("Text: Ivy has 2 dogs. She lives in
Lakeside. Question: How many dogs does Ivy have?"). For each of n such held-out-style prompts (sampled by the
world's ClosedQA family, seeded), the model is given the prompt in the one prompt format and the ideal
answer's start up to the value ("Ivy has"), and the probe reads the next-token distribution:

  count   the share of prompts where the passage's number is the most likely of the numbers 2-9
          (the values the passages use: chance is 1/8);
  p_right the mean probability the model gives the passage's number, renormalised over 2-9.

A model that copies from its context scores near 1; a model that answers from its prior scores near chance,
and no reward model or PPO built on it can tell a right closed-QA answer from a wrong one. The world's
tokenizer (or any tokenizer that writes " 2" ... " 9" as single tokens) is needed.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigpt_rlhf.checkpoint import load_checkpoint, load_model  # noqa: E402
from minigpt_rlhf.data import encode_prompt  # noqa: E402
from minigpt_rlhf.tokenizer import get_tokenizer  # noqa: E402
from minigpt_rlhf.world.qa import ClosedQA, closed_answer  # noqa: E402

NUMBERS = list(range(2, 10))


def count_probes(n: int, seed: int) -> list[tuple[str, str, int]]:
    """n closed-QA prompts that ask for a count and allow a full sentence: (prompt, answer start, number)."""
    family, rng, out = ClosedQA(), random.Random(f"copy-probe/{seed}"), []
    while len(out) < n:
        p = family.sample(rng)
        answer = closed_answer(p["passage"], p["question"])
        if answer is None or answer[0] != "count" or p["max_words"] is not None:
            continue
        _, person, value, _ = answer
        out.append((family.render(p), f"{person} has", int(value)))
    return out


@torch.no_grad()
def probe(model, tok, probes: list[tuple[str, str, int]]) -> dict:
    number_ids = []
    for k in NUMBERS:
        ids = tok.encode(f" {k}")
        if len(ids) != 1:
            raise SystemExit(f"the tokenizer writes ' {k}' as {len(ids)} tokens; the probe needs one")
        number_ids.append(ids[0])
    hits, p_right = 0, 0.0
    for prompt, start, value in probes:
        ids = encode_prompt(tok, prompt) + tok.encode(start)
        logits = model(torch.tensor([ids]))[0, -1, number_ids]  # (8,) logits of " 2" ... " 9"
        probs = torch.softmax(logits.float(), dim=-1)
        right = NUMBERS.index(value)
        hits += int(probs.argmax()) == right
        p_right += float(probs[right])
    return {"count": hits / len(probes), "p_right": p_right / len(probes)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", default="out/base/model.pt,out/sft/model.pt", help="comma-separated .pt files")
    p.add_argument("--tokenizer", default="default")
    p.add_argument("--n", type=int, default=400, help="probe prompts")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    tok = get_tokenizer(args.tokenizer)
    probes = count_probes(args.n, args.seed)
    print(f"{args.n} closed-QA count questions; chance: count {1 / len(NUMBERS):.3f}, p_right {1 / len(NUMBERS):.3f}")
    for path in args.checkpoints.split(","):
        model = load_model(load_checkpoint(path), tok, path, "cpu")
        r = probe(model, tok, probes)
        print(f"{path}: count {r['count']:.3f}  p_right {r['p_right']:.3f}")


if __name__ == "__main__":
    main()
