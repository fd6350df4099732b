"""Evaluation shared by the three stages: sample responses to held-out prompts and judge them with the
world's gold labeler (the stand-in for InstructGPT's held-out human labelers), and measure the loss on
the pretraining corpus (the "alignment tax" of RLHF)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from . import world
from .common import gather_shards
from .data import encode_prompt
from .losses import lm_loss
from .sampling import generate


@torch.no_grad()
def sample_responses(model, tok, rows: list[dict], max_new_tokens: int, temperature: float,
                     batch_size: int = 256, seed: int = 0, greedy: bool = False, runtime=None,
                     drop_finished: bool = True) -> list[dict]:
    """One sampled response per prompt row. Returns rows extended with response, ended (emitted EOS).
    Rows go through `generate` in batches of `batch_size` prompts of similar length; on a 2-core CPU 256 samples
    about 1.4x faster than 64, since a decoding step of a small model costs little more for more rows
    (bench/RESULTS.md, session 4).

    With a distributed `runtime` (common.Runtime under torchrun) the rows are sharded: rank r samples rows
    r, r + W, ... with seed + r, and every rank gets all the samples back in the original order."""
    if runtime is not None and runtime.ddp:
        mine = sample_responses(model, tok, rows[runtime.rank:: runtime.world_size], max_new_tokens,
                                temperature, batch_size, seed + runtime.rank, greedy, drop_finished=drop_finished)
        return gather_shards(mine, runtime)
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    encoded = [encode_prompt(tok, r["prompt"]) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i]))  # similar lengths pad less
    out = [None] * len(rows)
    for b in range(0, len(order), batch_size):
        idx = order[b: b + batch_size]
        s = generate(model, [encoded[i] for i in idx], max_new_tokens, tok.eos_id, tok.pad_id,
                     temperature=temperature, greedy=greedy, n_vocab=tok.n_vocab, generator=g,
                     drop_finished=drop_finished)
        for j, i in enumerate(idx):
            n = int(s.response_mask[j].sum())
            ids = s.response[j, :n].tolist()
            ended = bool(s.ended[j])
            text = tok.decode(ids[:-1] if ended else ids)
            out[i] = {**rows[i], "response": text, "ended": ended, "n_tokens": n, "response_ids": ids}
    return out


def gold_scores(samples: list[dict]) -> list[float]:
    return [world.gold_score(s["prompt"], s["response"], eos=s["ended"]) for s in samples]


def gold_report(samples: list[dict]) -> dict:
    """Mean gold score overall and per task family, and the fraction of responses that ended with EOS."""
    scores = gold_scores(samples)
    by_family = defaultdict(list)
    for s, g in zip(samples, scores):
        by_family[s.get("family") or world.family_of(s["prompt"])].append(g)
    return {
        "gold_score_mean": sum(scores) / len(scores),
        "gold_score_by_family": {f: sum(v) / len(v) for f, v in sorted(by_family.items())},
        "eos_rate": sum(s["ended"] for s in samples) / len(samples),
        "mean_response_tokens": sum(s["n_tokens"] for s in samples) / len(samples),
    }


@torch.no_grad()
def corpus_loss(model, stream, block_size: int, batch_size: int = 32, max_batches: int = 20,
                autocast=None) -> float:
    """Mean next-token loss on the first windows of a token stream (deterministic)."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for x, y in stream.eval_batches(batch_size, block_size, max_batches):
        dev = next(model.parameters()).device
        x, y = x.to(dev), y.to(dev)
        if autocast is not None:
            with autocast():
                logits = model(x)
        else:
            logits = model(x)
        total += float(lm_loss(logits.float(), y)) * x.size(0)
        n += x.size(0)
    model.train(was_training)
    return total / max(n, 1)


def win_rate(scores_a: list[float], scores_b: list[float]) -> tuple[float, tuple[float, float]]:
    """Fraction of prompts where A's gold score beats B's (ties count one half), with a 95% normal
    confidence interval over prompts."""
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores_a, scores_b)]
    n = len(wins)
    mean = sum(wins) / n
    var = sum((w - mean) ** 2 for w in wins) / max(n - 1, 1)
    half = 1.96 * math.sqrt(var / n)
    return mean, (max(0.0, mean - half), min(1.0, mean + half))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation: the Pearson correlation of the (tie-averaged) ranks."""
    ra, rb = _ranks(np.asarray(a, dtype=float)), _ranks(np.asarray(b, dtype=float))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def format_table(header: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in header]] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r]
                                          for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
