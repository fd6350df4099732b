"""Evaluation shared by the three stages, in one place: sample the models being compared on held-out
prompts, score the samples with the reward model and the judge (judge.py: the world's gold labeler, a user's
score function, or none), compute the KL from the reference model and the win rates with their confidence
intervals, and format the report. Also the loss on the pretraining corpus (the "alignment tax" of RLHF) and
the reward model's held-out accuracy.

The judge stands in for InstructGPT's held-out human labelers; without one, every stage still reports what
the reward model and the data can measure (the RM's own win rate is a proxy: PPO was trained to raise it)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from .common import gather_shards
from .data import DataError, encode_prompt
from .labeler import calibrate_temperature, expected_agreement, measure_agreement, rank_responses, within_group_gaps
from .losses import lm_loss
from .reward import collate_sequences, reward_at_eos
from .rollout import policy_logprobs
from .sampling import banned_token_ids, generate, left_pad


@torch.no_grad()
def sample_responses(model, tok, rows: list[dict], max_new_tokens: int, temperature: float,
                     batch_size: int = 256, seed: int = 0, greedy: bool = False, runtime=None,
                     drop_finished: bool = True, encode=None) -> list[dict]:
    """One sampled response per prompt row. Returns rows extended with response, ended (emitted EOS),
    n_tokens and response_ids (the sampled ids, EOS included when it ended). encode(prompt) -> ids, if given,
    builds the model's input instead of the one prompt format alone (e.g. data.few_shot_prompt for a base
    model); the rows keep their prompt.
    Rows go through `generate` in batches of `batch_size` prompts of similar length: a decoding step of a small
    model costs little more for more rows (bench/RESULTS.md, "bench_collect.py", measures the batch size).

    With a distributed `runtime` (common.Runtime under torchrun) the rows are sharded: rank r samples rows
    r, r + W, ... with seed + r, and every rank gets all the samples back in the original order.
    greedy and drop_finished are passed to `generate` (drop_finished=False: bench/bench_collect.py only)."""
    if runtime is not None and runtime.ddp:
        mine = sample_responses(model, tok, rows[runtime.rank:: runtime.world_size], max_new_tokens,
                                temperature, batch_size, seed + runtime.rank, greedy, drop_finished=drop_finished,
                                encode=encode)
        return gather_shards(mine, runtime)
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    encoded = [encode(r["prompt"]) if encode is not None else encode_prompt(tok, r["prompt"]) for r in rows]
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


# ----------------------------------------------------------------------------------------------------
# Scores of samples


def judge_scores(judge, samples: list[dict]) -> list[float]:
    """The judge's score of each sample (it sees whether the response was cut off, if it can)."""
    return [judge.score(s["prompt"], s["response"], s["ended"]) for s in samples]


def response_report(samples: list[dict], judge=None, scores: list[float] | None = None) -> dict:
    """EOS rate and mean response length; with a judge, its mean score overall and per task family
    (`gold_score_*`: the gold labeler is the world's judge). scores: the judge's scores, if already known."""
    out = {
        "eos_rate": sum(s["ended"] for s in samples) / len(samples),
        "mean_response_tokens": sum(s["n_tokens"] for s in samples) / len(samples),
    }
    if judge is not None:
        scores = judge_scores(judge, samples) if scores is None else scores
        by_family = defaultdict(list)
        for s, g in zip(samples, scores):
            by_family[judge.family(s)].append(g)
        out["gold_score_mean"] = sum(scores) / len(scores)
        out["gold_score_by_family"] = {f: sum(v) / len(v) for f, v in sorted(by_family.items())}
    return out


@torch.no_grad()
def rm_scores(rm, tok, samples: list[dict], batch_size: int = 32) -> list[float | None]:
    """The RM's score of each sample, read on the sampled token ids themselves (prompt ids + response ids
    + EOS), exactly what PPO's rollouts are scored on, never on re-tokenised decoded text (a sampled id
    sequence need not be the tokenizer's own encoding of its text). None for a response that did not end:
    the RM never scores unfinished responses."""
    device = next(rm.parameters()).device
    done = [i for i, s in enumerate(samples) if s["ended"]]
    out: list[float | None] = [None] * len(samples)
    for b in range(0, len(done), batch_size):
        idx = done[b: b + batch_size]
        seqs = [encode_prompt(tok, samples[i]["prompt"]) + list(samples[i]["response_ids"]) for i in idx]
        tokens, mask = collate_sequences(seqs, tok.pad_id, device)
        for i, r in zip(idx, reward_at_eos(rm, tokens, mask).float().cpu().tolist()):
            out[i] = r
    return out


@torch.no_grad()
def kl_to_reference(policy, ref, tok, samples: list[dict], temperature: float, batch_size: int = 32,
                    ref_temperature: float | None = None) -> float:
    """Mean over responses of sum_t (log pi - log pi_ref) on the policy's own samples, at the temperature
    they were sampled at: a Monte-Carlo estimate of KL(pi || pi_ref) per response. ref_temperature: the
    reference's temperature, if not the same (the SFT model at a lower temperature against SFT at 0.7)."""
    device = next(policy.parameters()).device
    banned = banned_token_ids(policy.config.vocab_size, tok.n_vocab, tok.pad_id, device)
    total = 0.0
    for i in range(0, len(samples), batch_size):
        chunk = samples[i: i + batch_size]
        # left-padded prompts, then the right-padded sampled tokens (EOS included), as the rollouts are laid out
        prompt, prompt_mask = left_pad([encode_prompt(tok, s["prompt"]) for s in chunk], tok.pad_id, device)
        response, response_mask = collate_sequences([s["response_ids"] for s in chunk], tok.pad_id, device)
        tokens, mask = torch.cat([prompt, response], 1), torch.cat([prompt_mask, response_mask], 1)  # (B, P + N)
        P = prompt.size(1)
        lp = policy_logprobs(policy, tokens, mask, P, temperature, banned)
        lr = policy_logprobs(ref, tokens, mask, P, temperature if ref_temperature is None else ref_temperature,
                             banned)
        total += float(((lp - lr) * mask[:, P:]).sum())
    return total / len(samples)


@torch.no_grad()
def corpus_loss(model, stream, block_size: int, batch_size: int = 32, max_batches: int = 20,
                autocast=None) -> float:
    """Mean next-token loss on the first windows of a token stream (deterministic). A stream too short for one
    window of block_size + 1 tokens has no loss to report: that is an error, never a loss of 0."""
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
    if n == 0:
        raise DataError(f"{getattr(stream, 'path', 'the corpus')}: {len(stream)} tokens, too short for one window "
                        f"of {block_size + 1} tokens: its loss cannot be measured. Add text or lower --block_size")
    return total / n


# ----------------------------------------------------------------------------------------------------
# Win rates


def win_outcomes(scores_a, scores_b) -> np.ndarray:
    """1 where A's score beats B's, 1/2 for a tie, 0 for a loss; elementwise, any shape."""
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    return np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))


def win_rate(wins, n_bootstrap: int = 2000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Win rate and its 95% interval from outcomes `wins` of shape (P, S): S samples on each of P prompts.

    The S samples of one prompt are correlated (an easy prompt is won by both models on every sample), so
    the interval comes from a cluster bootstrap over prompts, not over samples: resample the P prompts with
    replacement, each with all its S outcomes, and take the 2.5 and 97.5 percentiles of the resampled rate
    (Davison & Hinkley 1997, sec. 3.8; Field & Welsh 2007). Resampling samples as if independent would make
    the interval too narrow by about sqrt(1 + (S - 1) * ICC) (the design effect; tests/test_evaluate.py)."""
    wins = np.asarray(wins, dtype=float)
    wins = wins.reshape(len(wins), -1)  # (P, S)
    per_prompt = wins.mean(1)  # (P,): every prompt has S samples, so the rate is the mean of these
    rate = float(per_prompt.mean())
    rng = np.random.default_rng(seed)
    boot = per_prompt[rng.integers(0, len(per_prompt), size=(n_bootstrap, len(per_prompt)))].mean(1)  # (n_bootstrap,)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return rate, (float(lo), float(hi))


# ----------------------------------------------------------------------------------------------------
# Comparing models on held-out prompts (PPO's final report)


def compare_models(models: dict, tok, rows: list[dict], *, reference: str, candidate: str, judge=None, rm=None,
                   max_new_tokens: int, temperature: float, samples_per_prompt: int = 1, seed: int = 1,
                   no_eos_score: float | None = None, corpus_val=None, runtime=None,
                   prompt_encoders: dict | None = None, ideal=None,
                   temperatures: dict | None = None, given_samples: dict | None = None) -> tuple[dict, dict]:
    """Sample every model in `models` ({name: model}, in table order) samples_per_prompt times on each
    held-out prompt, with the same seed, and compare them. Returns (result, samples by name).
    prompt_encoders: {name: encode(prompt) -> ids} for a model prompted otherwise than in the one format (the
    base model, prompted few-shot); its responses are scored as answers to the plain prompt.
    temperatures: {name: T} for a model sampled at another temperature than `temperature` (the sharpening
    control: the SFT model again, at its best temperature); the same model may stand under two names.
    ideal(prompt) -> the ideal response, if the judge knows it: then ideal_rate_m, the share of m's samples
    that score as high as the ideal answer (none of them can be beaten; a tie counts 1/2 in a win rate).
    given_samples: {name: samples} made elsewhere, in this function's prompt-major order (the reference's
    samples reused across calls, with the same seed; best-of-n's picks, whose models[name] is None): they are
    not sampled again. The KL is measured only if models[candidate] is a model.

    result (flat, as eval.json stores it), for each model name m:
      eos_rate_m, response_tokens_m; rm_score_m (mean RM score of the finished responses, if rm);
      gold_score_m and gold_score_by_family_m (the judge's score, if judge); pretrain_loss_m (if corpus_val);
    and kl_from_{reference}: KL(candidate || reference) per response on the candidate's samples.
    Win rates of the candidate over every other model o, each with its cluster-bootstrap 95% interval:
      win_rate_vs_o by the judge; rm_win_rate_vs_o by the RM (a proxy: PPO was trained to raise it), where an
      unfinished response scores no_eos_score (PPO's reward for it; None: below every finished one).
    The interval over the reference is win_rate_ci95 / rm_win_rate_ci95; over another model o,
    win_rate_vs_o_ci95 / rm_win_rate_vs_o_ci95."""
    S = samples_per_prompt
    expanded = [{**r, "prompt_index": i} for i, r in enumerate(rows) for _ in range(S)]  # prompt-major
    encoders, temps = prompt_encoders or {}, {name: (temperatures or {}).get(name, temperature) for name in models}
    given = given_samples or {}
    samples = {name: given[name] if name in given else
               sample_responses(m, tok, expanded, max_new_tokens, temps[name], seed=seed, runtime=runtime,
                                encode=encoders.get(name))
               for name, m in models.items()}
    result: dict = {f"temperature_{name}": t for name, t in temps.items()}
    gold, proxy = {}, {}
    for name, ss in samples.items():
        scores = judge_scores(judge, ss) if judge is not None else None
        rep = response_report(ss, judge, scores)
        result[f"eos_rate_{name}"] = rep["eos_rate"]
        result[f"response_tokens_{name}"] = rep["mean_response_tokens"]
        if rm is not None:
            rewards = rm_scores(rm, tok, ss)
            finished = [x for x in rewards if x is not None]
            result[f"rm_score_{name}"] = sum(finished) / len(finished) if finished else float("nan")
            low = -math.inf if no_eos_score is None else no_eos_score
            proxy[name] = np.array([low if x is None else x for x in rewards]).reshape(len(rows), S)
        if judge is not None:
            result[f"gold_score_{name}"] = rep["gold_score_mean"]
            result[f"gold_score_by_family_{name}"] = rep["gold_score_by_family"]
            gold[name] = np.array(scores).reshape(len(rows), S)
            if ideal is not None:
                best = np.array([judge.score(r["prompt"], ideal(r["prompt"])) for r in rows])  # (P,)
                result[f"ideal_rate_{name}"] = float((gold[name] >= best[:, None] - 1e-9).mean())
        if corpus_val is not None and models[name] is not None:
            m = models[name]
            result[f"pretrain_loss_{name}"] = corpus_loss(m, corpus_val, m.config.block_size)
    if models[candidate] is not None:
        result[f"kl_from_{reference}"] = kl_to_reference(models[candidate], models[reference], tok,
                                                         samples[candidate], temps[candidate],
                                                         ref_temperature=temps[reference])
    for other in models:
        if other == candidate:
            continue
        for prefix, scores in (("", gold), ("rm_", proxy)):
            if scores:
                rate, ci = win_rate(win_outcomes(scores[candidate], scores[other]))
                result[f"{prefix}win_rate_vs_{other}"] = rate
                ci_key = f"{prefix}win_rate_ci95" if other == reference else f"{prefix}win_rate_vs_{other}_ci95"
                result[ci_key] = list(ci)
    result.update(judge=judge.name if judge is not None else "none", samples_per_prompt=S, n_eval_prompts=len(rows))
    return result, samples


def best_temperature(model, tok, rows: list[dict], temperatures: list[float], *, judge=None, rm=None,
                     max_new_tokens: int, samples_per_prompt: int = 1, seed: int = 1,
                     no_eos_score: float | None = None, runtime=None) -> tuple[float, dict[float, float]]:
    """The sharpening control's temperature: sample `model` at each of `temperatures` on `rows` (prompts that are
    NOT the held-out evaluation prompts, so that the choice does not peek at the test) and return the one whose
    samples score highest, with every temperature's mean score. The score is the judge's if there is one, else
    the RM's (an unfinished response scores no_eos_score, PPO's reward for it; None: it is left out). A tie goes
    to the higher temperature. Lowering the temperature sharpens the policy towards its most frequent answers
    for free, which a small RLHF gain can be mistaken for."""
    if judge is None and rm is None:
        raise ValueError("best_temperature needs a judge or a reward model to score the samples")
    expanded = [r for r in rows for _ in range(samples_per_prompt)]
    scores = {}
    for t in temperatures:
        ss = sample_responses(model, tok, expanded, max_new_tokens, t, seed=seed, runtime=runtime)
        if judge is not None:
            values = judge_scores(judge, ss)
        else:
            values = [no_eos_score if x is None else x for x in rm_scores(rm, tok, ss)]
            values = [x for x in values if x is not None]
        scores[t] = sum(values) / len(values) if values else float("-inf")
    return max(temperatures, key=lambda t: (scores[t], t)), scores


def format_comparison(result: dict, samples: dict, *, reference: str, candidate: str, n_examples: int = 4,
                      labels: dict | None = None) -> str:
    """The report of compare_models: a table with one column per model, the win rates, responses side by side.
    labels: {name: column label} where NAME in capitals would not say what the column is. With
    result["demonstration_gold_score_by_family"], a last column DEMOS gives the judge's mean score of the SFT
    demonstrations per family (of their own prompts, not the held-out ones): what SFT imitates."""
    names = list(samples)
    label = {n: (labels or {}).get(n, n.upper()) for n in names}
    judged = f"gold_score_{candidate}" in result
    what = "gold" if result.get("judge") == "world" else "judge"
    demos = result.get("demonstration_gold_score_by_family") if judged else None
    nan, blank = float("nan"), [""] if demos else []
    table = []
    if judged:
        fams = sorted(set().union(*(result[f"gold_score_by_family_{n}"] for n in names)))
        if fams != ["all"]:
            table += [[f] + [result[f"gold_score_by_family_{n}"].get(f, nan) for n in names]
                      + ([demos.get(f, nan)] if demos else []) for f in fams]
        table.append([f"ALL ({what} score)"] + [result[f"gold_score_{n}"] for n in names]
                     + ([result["demonstration_gold_score_mean"]] if demos else []))
    for key, row in (("ideal_rate", "ideal rate"), ("rm_score", "RM score"), ("eos_rate", "EOS rate"),
                     ("response_tokens", "response tokens"), ("pretrain_loss", "pretraining loss")):
        if f"{key}_{candidate}" in result:
            table.append([row] + [result[f"{key}_{n}"] for n in names] + blank)
    lines = [format_table(["held-out prompts"] + [label[n] for n in names] + (["DEMOS"] if demos else []), table)]
    per = f"{result['n_eval_prompts']} prompts x {result['samples_per_prompt']} samples, ties count 1/2"
    for other in names:
        if other == candidate:
            continue
        for prefix, kind in (("", f"{what} win rate"), ("rm_", "RM win rate (a proxy: PPO was trained to raise it)")):
            if f"{prefix}win_rate_vs_{other}" in result:
                ci = result[f"{prefix}win_rate_ci95" if other == reference else f"{prefix}win_rate_vs_{other}_ci95"]
                lines.append(f"{kind} of {label[candidate]} over {label[other]}: "
                             f"{result[f'{prefix}win_rate_vs_{other}']:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}, {per})")
    if f"kl_from_{reference}" in result:
        kl = result[f"kl_from_{reference}"]
        lines.append(f"KL({label[candidate]} || {label[reference]}) = {kl:.2f} nats per response")
    for i in range(0, min(n_examples * result["samples_per_prompt"], len(samples[candidate])),
                   result["samples_per_prompt"]):
        lines.append(f"--- {samples[candidate][i]['prompt']}")
        lines += [f" {label[n]}: {samples[n][i]['response']}" for n in names]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# The SFT and reward-model reports


def sft_report(samples: list[dict], demos: list[dict], judge=None) -> dict:
    """SFT's held-out samples (response_report), and with a judge the mean score of the held-out
    demonstrations themselves: what SFT imitates."""
    out = response_report(samples, judge)
    if judge is not None:
        out["demonstration_gold_score_mean"] = demonstration_scores(judge, demos)["demonstration_gold_score_mean"]
    return out


def demonstration_scores(judge, demos: list[dict]) -> dict:
    """The judge's mean score of demonstrations (prompt + response as written, with EOS), overall and per
    task family: the teachers that SFT imitates, which RLHF can surpass (Stiennon et al. 2020)."""
    rep = response_report([{**d, "ended": True, "n_tokens": 0} for d in demos], judge)
    return {"demonstration_gold_score_mean": rep["gold_score_mean"],
            "demonstration_gold_score_by_family": rep["gold_score_by_family"]}


def format_sft_report(result: dict, samples: list[dict], n_examples: int = 3) -> str:
    lines = []
    if "gold_score_mean" in result:
        rows = [[f, v] for f, v in result["gold_score_by_family"].items() if f != "all"]
        rows += [["ALL", result["gold_score_mean"]], ["demonstrations (val)", result["demonstration_gold_score_mean"]]]
        what = "gold" if result.get("judge") == "world" else "judge"
        lines.append(format_table(["family", f"SFT {what} score"], rows))
    lines.append(f"EOS rate {result['eos_rate']:.3f}; SFT val loss {result['sft_val_loss_before']:.3f} -> "
                 f"{result['sft_val_loss']:.3f}; wall time {result['wall_time_s']:.0f}s")
    if "corpus_val_loss" in result:
        kept = (f"base model {result['base_corpus_val_loss']:.3f} -> " if "base_corpus_val_loss" in result else "")
        lines.append(f"pretraining corpus loss: {kept}SFT {result['corpus_val_loss']:.3f}")
    lines += [f"--- {s['prompt']}\n>>> {s['response']}" for s in samples[:n_examples]]
    return "\n".join(lines)


def pair_accuracy(rewards: list[float], order: list[int]) -> tuple[float, int]:
    """Pairs (w above l in `order`) the rewards order the same way, out of all pairs. A tie in reward counts
    1/2: the RM states no preference, which agrees with a label as often as a coin flip (the same convention
    as the win rate's ties)."""
    correct, total = 0.0, 0
    for a in range(len(order)):
        for b in range(a + 1, len(order)):
            total += 1
            rw, rl = rewards[order[a]], rewards[order[b]]
            correct += 1.0 if rw > rl else 0.5 if rw == rl else 0.0
    return correct, total


def rm_report(comparisons: list[dict], rewards: list[list[float]], judge=None, temperature: float | None = None,
              target_agreement: float = 0.726, rng: np.random.Generator | None = None) -> dict:
    """The reward model on held-out comparisons, from its `rewards` of every response: pairwise accuracy vs
    the labels, per family. With a judge also: accuracy vs the judge's noiseless order (on pairs whose judge
    scores differ), Spearman of reward vs judge score, and the measured agreement of two simulated labelers
    at `temperature` (how often two labelers order a pair alike: a reference point, not a ceiling, since an RM
    that follows the noiseless order agrees with one labeler's label with probability p, more than the
    p^2 + (1 - p)^2 of two labelers; calibrated to target_agreement when the comparisons came from a file)."""
    lab, fam = [0.0, 0], defaultdict(lambda: [0.0, 0])
    for c, r in zip(comparisons, rewards):
        ok, n = pair_accuracy(r, c["ranking"])
        lab[0] += ok
        lab[1] += n
        f = c.get("family") or (judge.family(c) if judge is not None else "all")
        fam[f][0] += ok
        fam[f][1] += n
    out = {"accuracy_vs_labels": lab[0] / max(lab[1], 1)}
    if judge is not None:
        golds = [[judge.score(c["prompt"], resp, e) for resp, e in
                  zip(c["responses"], c.get("ended") or [True] * len(c["responses"]))] for c in comparisons]
        gold_acc = [0.0, 0]
        for r, g in zip(rewards, golds):
            order = rank_responses(g, 0.0, np.random.default_rng(0))  # the noiseless order, best first
            for a in range(len(order)):  # pairs whose judge scores tie have no order
                for b in range(a + 1, len(order)):
                    if g[order[a]] != g[order[b]]:
                        ok, _ = pair_accuracy([r[order[a]], r[order[b]]], [0, 1])
                        gold_acc[0] += ok
                        gold_acc[1] += 1
        if temperature is None:  # comparisons from a file: what the simulated labeler would give
            temperature = calibrate_temperature(golds, target_agreement)
        rng = rng if rng is not None else np.random.default_rng(0)
        out.update(accuracy_vs_gold=gold_acc[0] / max(gold_acc[1], 1),
                   labeler_agreement=measure_agreement(golds, temperature, rng, n_repeats=20),
                   labeler_agreement_expected=expected_agreement(within_group_gaps(golds), temperature),
                   spearman_vs_gold=spearman([x for r in rewards for x in r], [x for g in golds for x in g]))
    out.update(accuracy_by_family={f: v[0] / max(v[1], 1) for f, v in sorted(fam.items())},
               n_val_prompts=len(comparisons), n_val_pairs=lab[1], labeler_temperature=temperature,
               judge=judge.name if judge is not None else "none")
    return out


def format_rm_report(result: dict) -> str:
    rows = [[f"accuracy: {f}", v] for f, v in result["accuracy_by_family"].items() if f != "all"]
    rows.append(["accuracy vs noisy labels" if "labeler_agreement" in result else "accuracy vs labels",
                 result["accuracy_vs_labels"]])
    if "accuracy_vs_gold" in result:
        what = "gold" if result["judge"] == "world" else "judge"
        rows += [[f"accuracy vs {what} order", result["accuracy_vs_gold"]],
                 ["two-labeler agreement", result["labeler_agreement"]],
                 [f"Spearman(RM reward, {what})", result["spearman_vs_gold"]]]
    return format_table(["validation metric", "value"], rows)


# ----------------------------------------------------------------------------------------------------
# Small statistics and the table


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
