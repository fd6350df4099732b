"""Comparisons: the ranked responses the reward model learns from. Reading and checking a comparisons file,
collecting comparisons by sampling a model and having the simulated labelers rank the samples, and splitting
them into training and held-out prompts.

InstructGPT's labelers ranked K in [4, 9] responses per prompt, which gives C(K, 2) comparisons (Ouyang et al.
2022, sec. 3.5); here the ranking is a Plackett-Luce draw around a labeler's scores (labeler.py).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .common import print0
from .data import DataError, check_text, iter_jsonl, parse_json, read_text, source_of
from .evaluate import sample_responses
from .labeler import calibrate_temperature, rank_responses
from .reward import encode_responses


def read_comparisons(path: str | Path) -> list[dict]:
    """K-wise {"prompt", "responses": [...], "ranking": [...] best first} or pairwise
    {"prompt", "chosen", "rejected"} lines (a pairwise line is K = 2 with ranking [0, 1]); optional
    "ended" (one bool per response: did it emit EOS) and "family". The responses of a line must differ:
    two identical texts have no right order, and no reward model can separate them (collect_comparisons
    drops repeats for the same reason). Errors name the file and line."""
    rows = []
    for where, obj in iter_jsonl(path):
        if not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
            raise DataError(f"{where}: expected an object with a non-empty string 'prompt'")
        check_text(obj["prompt"], where, "prompt")
        if "chosen" in obj or "rejected" in obj:
            responses, ranking = [obj.get("chosen"), obj.get("rejected")], [0, 1]
        elif "responses" in obj and "ranking" in obj:
            responses, ranking = obj["responses"], obj["ranking"]
        else:
            raise DataError(f"{where}: expected 'responses' + 'ranking' (K-wise) or 'chosen' + 'rejected'")
        if not isinstance(responses, list) or len(responses) < 2:
            raise DataError(f"{where}: a comparison needs at least 2 responses")
        if any(not isinstance(r, str) or not r.strip() for r in responses):
            raise DataError(f"{where}: every response must be non-empty text")
        for r in responses:
            check_text(r, where, "responses")
        if not isinstance(ranking, list) or any(type(i) is not int for i in ranking) \
                or sorted(ranking) != list(range(len(responses))):
            raise DataError(f"{where}: 'ranking' must be a permutation of 0..{len(responses) - 1}, "
                            f"got {ranking!r}")
        ended = obj.get("ended")
        if ended is not None and (not isinstance(ended, list) or len(ended) != len(responses)
                                  or any(type(e) is not bool for e in ended)):
            raise DataError(f"{where}: 'ended' must be a list of {len(responses)} true/false values, one per "
                            "response, or left out")
        if "family" in obj and not isinstance(obj["family"], str):
            raise DataError(f"{where}: 'family' should be str, got {type(obj['family']).__name__}")
        first = {}
        for i, key in enumerate(zip(responses, ended or [True] * len(responses))):
            if key in first:
                what = ("'chosen' and 'rejected' are the same text" if "chosen" in obj else
                        f"responses {first[key]} and {i} are the same text")
                raise DataError(f"{where}: {what}, which no ranking can order. Remove the repeat")
            first[key] = i
        rows.append({**obj, "responses": responses, "ranking": ranking, "_where": where})
    if not rows:
        raise DataError(f"{path}: no comparisons. Add one JSON object per line")
    return rows


def check_comparisons_fit(tok, comparisons: list[dict], block_size: int):
    """Every prompt + response + EOS of the comparisons must fit the reward model's context: the reward is
    read at that EOS, so a response cannot be cut short."""
    too_long = [(c.get("_where", "?"), len(s)) for c in comparisons
                for s in encode_responses(tok, c["prompt"], c["responses"], c.get("ended")) if len(s) > block_size]
    if too_long:
        raise DataError(f"{too_long[0][0]}: {len(too_long)} comparison responses of {source_of(comparisons)} "
                        f"are longer than the context (this one has {too_long[0][1]} tokens with its prompt, "
                        f"block_size is {block_size}). Shorten them or raise block_size")


def write_comparisons(path: str | Path, rows: list[dict]):
    """One JSON object per line, written atomically; keys starting with "_" (where a row was read) are left out."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_labeler_temperature(path: str | Path) -> float:
    """out/rm/labeler.json: the simulated labelers' calibrated temperature, written when comparisons are collected."""
    obj = parse_json(read_text(path, "labeler file"), str(path))
    t = obj.get("temperature") if isinstance(obj, dict) else None
    if type(t) not in (int, float) or not math.isfinite(t) or t < 0:
        raise DataError(f"{path}: 'temperature' should be a number >= 0, got {t!r}. Delete the file and run "
                        "train_rm.py with --relabel=True to collect and calibrate anew")
    return t


@dataclass(frozen=True)
class CollectSettings:
    """How comparisons are collected (train_rm.py's options of the same names): K uniform in k_min..k_max
    samples per prompt at sample_temperature, up to max_new_tokens each; distinct_tries extra sampling rounds
    replace repeats; the labeler's noise is calibrated to target_agreement; seed seeds the sampling. train_rm.py
    records them in the RM checkpoint, so that later RLHF rounds collect the same way (iterated.py)."""
    k_min: int
    k_max: int
    max_new_tokens: int
    sample_temperature: float
    distinct_tries: int
    target_agreement: float
    seed: int

    @classmethod
    def of(cls, config) -> CollectSettings:
        """The settings of a config that has these fields (train_rm.py's)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    def asdict(self) -> dict:
        return asdict(self)


def collect_comparisons(model, tok, rows, config, rt, rng, labeler, temperature=None) -> tuple[list[dict], float]:
    """Sample K responses per prompt from `model` (the SFT model or, in a later RLHF round, the current policy)
    and have the simulated labeler rank them: the `labeler`'s scores (judge.Scorer) with Plackett-Luce noise,
    calibrated on these groups or fixed to a given `temperature` (the same labelers in every round). `config`
    is a CollectSettings (or has its fields: train_rm.py's Config). `rng` draws each prompt's K and the
    labeler's noise: under torchrun it must be the same generator on every process, so that every rank ranks
    the same samples the same way (the samples themselves are sharded and gathered by sample_responses).

    A labeler ranks K *different* outputs: an empty response, or a repeat of one already in the group (a pair
    of identical texts has no right order, and no RM can separate them), is dropped and, for up to
    config.distinct_tries more rounds, replaced by a new sample of the same prompt."""
    ks = rng.integers(config.k_min, config.k_max + 1, size=len(rows))
    distinct = [[] for _ in rows]  # distinct samples of each prompt
    seen = [set() for _ in rows]
    todo = [(i, int(k)) for i, k in enumerate(ks)]  # (prompt index, samples still wanted)
    n_sampled = 0
    for attempt in range(1 + config.distinct_tries):
        expanded = [rows[i] for i, need in todo for _ in range(need)]
        if not expanded:
            break
        samples = sample_responses(model, tok, expanded, config.max_new_tokens, config.sample_temperature,
                                   seed=config.seed + 7919 * attempt, runtime=rt)  # sharded, gathered on all
        n_sampled += len(samples)
        start, still_short = 0, []
        for i, need in todo:
            # responses cut off without EOS stay in (the labeler sees them cut off)
            for s in samples[start: start + need]:
                if s["response"].strip() and (s["response"], s["ended"]) not in seen[i]:
                    seen[i].add((s["response"], s["ended"]))
                    distinct[i].append(s)
            start += need
            if len(distinct[i]) < ks[i]:
                still_short.append((i, int(ks[i]) - len(distinct[i])))
        todo = still_short
    groups = [(row, group, [labeler.score(row["prompt"], s["response"], s["ended"]) for s in group])
              for row, group in zip(rows, distinct) if len(group) >= 2]
    if not groups:
        raise DataError("the model produced fewer than 2 non-empty responses for every RM prompt; "
                         "train SFT longer or raise max_new_tokens")
    # the labeler's noise is set so that two independent labelers agree on target_agreement of the pairs
    if temperature is None:
        temperature = calibrate_temperature([g for _, _, g in groups], config.target_agreement)
    comparisons = []
    for row, group, scores in groups:
        ranking = rank_responses(scores, temperature, rng)
        comparisons.append({"prompt": row["prompt"], "family": row.get("family", ""),
                            "responses": [s["response"] for s in group], "ended": [s["ended"] for s in group],
                            "ranking": [int(i) for i in ranking]})
    n_kept = sum(len(c["responses"]) for c in comparisons)
    print0(f"collected {len(comparisons)} prompts with {n_kept} distinct responses out of {n_sampled} samples "
           f"({len(todo)} prompts still short of K after {config.distinct_tries} extra rounds); "
           f"{sum(not e for c in comparisons for e in c['ended'])} without EOS; labeler temperature {temperature:.4f}")
    return comparisons, temperature


def held_out_rows(n: int, val_fraction: float, seed: int) -> list[int]:
    """The rows of n comparisons that are held out: a seeded random share, the same however they were collected."""
    perm = np.random.default_rng([seed, 1]).permutation(n)
    return sorted(int(i) for i in perm[: max(1, int(n * val_fraction))])


def split_rows(comparisons: list[dict], held_out: list[int]) -> tuple[list[dict], list[dict]]:
    """(train, held-out) by the held-out rows' indices."""
    held = set(held_out)
    return [c for i, c in enumerate(comparisons) if i not in held], [comparisons[i] for i in held_out]


def split_comparisons(comparisons: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out): a seeded random share of the prompts is held out, the same however they were collected."""
    return split_rows(comparisons, held_out_rows(len(comparisons), val_fraction, seed))


def comparisons_path(config) -> str:
    """The comparisons an RM trains on: --comparisons, else {out_dir}/rm/comparisons.jsonl."""
    return config.comparisons or os.path.join(config.out_dir, "rm", "comparisons.jsonl")


def labeler_path(out_dir: str) -> str:
    return os.path.join(out_dir, "rm", "labeler.json")


def read_saved_comparisons(config) -> tuple[list[dict] | None, list[dict] | None, float | None]:
    """What train_rm.py reads instead of collecting: (comparisons, held-out comparisons, labeler temperature).
    The comparisons are --comparisons, else {out_dir}/rm/comparisons.jsonl if it exists and --relabel is off
    (else None: they are to be collected); held out: --val_comparisons (None: a share of the comparisons is held
    out); the temperature is that of {out_dir}/rm/labeler.json, for comparisons collected here (else None)."""
    val = read_comparisons(config.val_comparisons) if config.val_comparisons else None
    path = comparisons_path(config)
    if not (config.comparisons or (os.path.exists(path) and not config.relabel)):
        return None, val, None
    comparisons = read_comparisons(path)
    temp_path = labeler_path(config.out_dir)
    temperature = None
    if os.path.exists(temp_path) and not config.comparisons:
        temperature = read_labeler_temperature(temp_path)
    return comparisons, val, temperature


def train_and_held_out(comparisons: list[dict], val_comparisons: list[dict] | None, config):
    """(train, held-out): a seeded share of the prompts of `comparisons` held out, or, if --val_comparisons was
    given, all of them against that fixed held-out set (e.g. to compare RMs trained on different data), which
    must share no prompt with them."""
    if val_comparisons is None:
        return split_comparisons(comparisons, config.val_fraction, config.seed)
    shared = {c["prompt"] for c in comparisons} & {c["prompt"] for c in val_comparisons}
    if shared:
        raise DataError(f"--val_comparisons={config.val_comparisons}: {len(shared)} of its prompts are also in "
                         f"the training comparisons (e.g. {sorted(shared)[0]!r}); a held-out set must not be "
                         "trained on")
    return comparisons, val_comparisons
