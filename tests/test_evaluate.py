"""Evaluation helpers and the LR schedule, each against a hand computation."""

import math

import numpy as np
import pytest

from minigpt_rlhf.common import cosine_lr
from minigpt_rlhf.evaluate import spearman, win_outcomes, win_rate


def test_win_outcomes_count_ties_as_half_and_the_rate_is_their_mean():
    a = [0.9, 0.5, 0.3, 0.7]
    b = [0.1, 0.5, 0.8, 0.2]
    wins = win_outcomes(a, b)
    assert wins.tolist() == [1.0, 0.5, 0.0, 1.0]  # by hand
    rate, (lo, hi) = win_rate(wins)
    assert rate == pytest.approx(0.625) and lo <= rate <= hi
    assert win_rate(win_outcomes([0.5] * 5, [0.5] * 5)) == (0.5, (0.5, 0.5))


def test_win_rate_interval_is_the_percentile_bootstrap_over_prompts():
    wins = np.array([[1.0, 1.0, 0.0], [0.0, 0.5, 0.0], [1.0, 1.0, 1.0], [0.5, 0.0, 1.0]])  # (P=4, S=3)
    rate, (lo, hi) = win_rate(wins, n_bootstrap=500, seed=3)
    assert rate == pytest.approx(wins.mean())
    # the same resampling by a plain loop: draw 4 prompts with replacement, keep each prompt's 3 samples
    rng = np.random.default_rng(3)
    draws = rng.integers(0, 4, size=(500, 4))
    boot = [np.mean([wins[p].mean() for p in row]) for row in draws]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))


def correlated_outcomes(rng, n_prompts, n_samples, true_rate, concentration):
    """Win/loss outcomes whose per-prompt win probability q ~ Beta with mean true_rate: samples of one prompt
    share q, so they are correlated (intra-prompt correlation 1 / (concentration + 1))."""
    q = rng.beta(true_rate * concentration, (1 - true_rate) * concentration, size=n_prompts)  # (P,)
    return (rng.random((n_prompts, n_samples)) < q[:, None]).astype(float)  # (P, S)


def test_cluster_bootstrap_interval_covers_the_true_rate_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    true_rate, reps = 0.6, 400
    covered, naive_covered = 0, 0
    for r in range(reps):
        wins = correlated_outcomes(rng, n_prompts=100, n_samples=4, true_rate=true_rate, concentration=2.0)
        _, (lo, hi) = win_rate(wins, n_bootstrap=1000, seed=r)
        covered += lo <= true_rate <= hi
        # the same bootstrap over samples, as if they were independent: too narrow for correlated samples
        _, (lo, hi) = win_rate(wins.reshape(-1, 1), n_bootstrap=1000, seed=r)
        naive_covered += lo <= true_rate <= hi
    # 400 repetitions: the binomial standard error of a 0.95 coverage is 0.011
    assert 0.92 <= covered / reps <= 0.98
    # design effect 1 + (S - 1) * ICC = 1 + 3 / 3 = 2: the naive interval is sqrt(2) too narrow (~83% coverage)
    assert naive_covered / reps < 0.89


def test_spearman_matches_pearson_of_ranks_with_ties_averaged():
    a = [1.0, 2.0, 2.0, 5.0]
    b = [10.0, 30.0, 20.0, 40.0]
    ra, rb = [0, 1.5, 1.5, 3], [0, 2, 1, 3]  # ranks by hand
    ma, mb = sum(ra) / 4, sum(rb) / 4
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    expected = cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    assert spearman(a, b) == pytest.approx(expected)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_cosine_schedule_warms_up_linearly_then_decays_to_the_floor():
    lr, warm, total = 1e-3, 10, 110
    assert cosine_lr(0, total, lr, warm) == pytest.approx(lr / 10)
    assert cosine_lr(9, total, lr, warm) == pytest.approx(lr)
    assert cosine_lr(10, total, lr, warm) == pytest.approx(lr)  # start of the cosine
    mid = cosine_lr(60, total, lr, warm)  # halfway through the decay: the mean of lr and the floor
    assert mid == pytest.approx(0.5 * (lr + 0.1 * lr))
    assert cosine_lr(total, total, lr, warm) == pytest.approx(0.1 * lr)
    assert cosine_lr(total + 50, total, lr, warm) == pytest.approx(0.1 * lr)


def test_a_prompt_prefix_goes_before_the_template_and_the_row_keeps_its_prompt():
    import torch

    from minigpt_rlhf.data import encode_prompt
    from minigpt_rlhf.evaluate import sample_responses
    from minigpt_rlhf.model import GPT, GPTConfig
    from minigpt_rlhf.sampling import generate
    from minigpt_rlhf.tokenizer import get_tokenizer

    tok = get_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=96, vocab_size=tok.n_vocab, n_layer=1, n_head=2, n_embd=32)).eval()
    prefix = tok.encode("Instruction: Name a colour.\nResponse:\nBlue.\n\n")  # a one-shot example
    rows = [{"prompt": "Name a fruit."}, {"prompt": "Name a tree, please."}]
    got = sample_responses(model, tok, rows, 8, 1.0, greedy=True, encode=lambda p: prefix + encode_prompt(tok, p))
    for row, sample in zip(rows, got):
        ref = generate(model, [prefix + encode_prompt(tok, row["prompt"])], 8, tok.eos_id, tok.pad_id, greedy=True,
                       n_vocab=tok.n_vocab)
        assert sample["response_ids"] == ref.response[0, : int(ref.response_mask[0].sum())].tolist()
        assert sample["prompt"] == row["prompt"]
    plain = sample_responses(model, tok, rows, 8, 1.0, greedy=True)
    assert [s["response_ids"] for s in plain] != [s["response_ids"] for s in got]


def test_corpus_loss_is_the_mean_over_whole_windows_and_a_stream_without_one_is_an_error(tmp_path):
    import torch

    from minigpt_rlhf.data import DataError, TokenStream
    from minigpt_rlhf.evaluate import corpus_loss
    from minigpt_rlhf.model import GPT, GPTConfig
    from minigpt_rlhf.tokenizer import get_tokenizer

    tok = get_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=2112, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    path = tmp_path / "corpus.txt"
    path.write_text("The people of Vespin wave a purple flag. The biggest town in Vespin is Rusk.\n\n" * 3)
    stream = TokenStream(tok, path)
    n = (len(stream) - 1) // 16  # whole windows of 16 inputs + 1 target
    assert n >= 2
    # the same windows by hand: window i is tokens[16i : 16i + 16] -> tokens[16i + 1 : 16i + 17]
    t = torch.from_numpy(stream.tokens)
    x = torch.stack([t[16 * i: 16 * i + 16] for i in range(n)])
    y = torch.stack([t[16 * i + 1: 16 * i + 17] for i in range(n)])
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    assert corpus_loss(model, stream, 16) == pytest.approx(expected, rel=1e-5)
    short = tmp_path / "short.txt"
    short.write_text("The cat sat.")
    with pytest.raises(DataError, match=f"{short}: .* too short for one window of 17 tokens: its loss cannot be"):
        corpus_loss(model, TokenStream(tok, short), 16)


class FakeModel:
    """Stands in for a model in the evaluation helpers whose sampling the tests replace."""


def fake_sampler(calls):
    """sample_responses stand-in: each response says the temperature it was sampled at and its prompt."""

    def sample(model, tok, rows, max_new_tokens, temperature, seed=0, runtime=None, encode=None, **kw):
        calls.append((model, temperature, [r["prompt"] for r in rows]))
        return [{**r, "response": f"{temperature} {r['prompt']} {i}", "ended": True, "n_tokens": 3,
                 "response_ids": [1, 2, 3]} for i, r in enumerate(rows)]

    return sample


def test_best_temperature_is_the_one_whose_samples_score_highest_and_a_tie_goes_to_the_higher(monkeypatch):
    from minigpt_rlhf import evaluate
    from minigpt_rlhf.judge import Scorer

    calls = []
    monkeypatch.setattr(evaluate, "sample_responses", fake_sampler(calls))
    rows = [{"prompt": "p1"}, {"prompt": "p2"}]
    # the judge prefers temperatures near 0.3, and prompt p2 scores 0.1 more
    judge = Scorer("fake", lambda p, r: 1 - abs(float(r.split()[0]) - 0.3) + (0.1 if p == "p2" else 0.0))
    best, scores = evaluate.best_temperature(FakeModel(), None, rows, [0.1, 0.3, 0.7], judge=judge,
                                             max_new_tokens=4, samples_per_prompt=2)
    assert best == 0.3
    for t in (0.1, 0.3, 0.7):  # the mean over 2 prompts x 2 samples, by hand
        assert scores[t] == pytest.approx(1 - abs(t - 0.3) + 0.05)
    assert [c[1] for c in calls] == [0.1, 0.3, 0.7] and all(c[2] == ["p1", "p1", "p2", "p2"] for c in calls)
    flat = Scorer("flat", lambda p, r: 0.5)
    assert evaluate.best_temperature(FakeModel(), None, rows, [0.5, 0.1], judge=flat, max_new_tokens=4)[0] == 0.5
    # without a judge, by the RM: an unfinished response scores no_eos_score
    monkeypatch.setattr(evaluate, "rm_scores", lambda rm, tok, ss: [None if s["prompt"] == "p1" else
                                                                    float(s["response"].split()[0]) for s in ss])
    best, scores = evaluate.best_temperature(FakeModel(), None, rows, [0.1, 0.7], rm=FakeModel(), max_new_tokens=4,
                                             no_eos_score=-1.0)
    assert best == 0.7 and scores[0.7] == pytest.approx((-1.0 + 0.7) / 2)


def test_compare_models_samples_a_model_at_its_own_temperature_and_wins_are_counted_alike(monkeypatch):
    from minigpt_rlhf import evaluate
    from minigpt_rlhf.judge import Scorer

    calls = []
    monkeypatch.setattr(evaluate, "sample_responses", fake_sampler(calls))
    monkeypatch.setattr(evaluate, "kl_to_reference", lambda *a, **kw: 0.0)
    sft, ppo = FakeModel(), FakeModel()
    rows = [{"prompt": f"p{i}"} for i in range(5)]
    judge = Scorer("fake", lambda p, r: float(r.split()[0]) * (1 + int(p[1:])) % 1.0)  # varies by prompt and T
    result, samples = evaluate.compare_models({"sft": sft, "sft_best_t": sft, "ppo": ppo}, None, rows,
                                              reference="sft", candidate="ppo", judge=judge, max_new_tokens=4,
                                              temperature=0.7, samples_per_prompt=2, temperatures={"sft_best_t": 0.3})
    assert [(c[0], c[1]) for c in calls] == [(sft, 0.7), (sft, 0.3), (ppo, 0.7)]
    assert result["temperature_sft_best_t"] == 0.3 and result["temperature_ppo"] == 0.7
    gold = {n: np.array([judge.score(s["prompt"], s["response"]) for s in ss]).reshape(5, 2)
            for n, ss in samples.items()}
    for other in ("sft", "sft_best_t"):
        assert result[f"win_rate_vs_{other}"] == pytest.approx(win_rate(win_outcomes(gold["ppo"], gold[other]))[0])
    assert result["win_rate_vs_sft_best_t_ci95"] == list(win_rate(win_outcomes(gold["ppo"], gold["sft_best_t"]))[1])


def test_given_samples_are_judged_as_sampled_ones_and_not_sampled_again(monkeypatch):
    """The laboratory reuses SFT's samples across calls and hands best-of-n's picks in (no model): the result is
    the one sampling them in the call would give, and only the other models are sampled."""
    from minigpt_rlhf import evaluate
    from minigpt_rlhf.judge import Scorer

    calls = []
    monkeypatch.setattr(evaluate, "sample_responses", fake_sampler(calls))
    monkeypatch.setattr(evaluate, "kl_to_reference", lambda *a, **kw: 0.25)
    sft, ppo = FakeModel(), FakeModel()
    rows = [{"prompt": f"p{i}"} for i in range(5)]
    judge = Scorer("fake", lambda p, r: float(r.split()[0]) * (1 + int(p[1:])) % 1.0)
    kw = dict(reference="sft", candidate="ppo", judge=judge, max_new_tokens=4, temperature=0.7, samples_per_prompt=2)
    full, samples = evaluate.compare_models({"sft": sft, "ppo": ppo}, None, rows, **kw)
    calls.clear()
    again, _ = evaluate.compare_models({"sft": sft, "ppo": ppo}, None, rows, given_samples={"sft": samples["sft"]},
                                       **kw)
    assert [c[0] for c in calls] == [ppo] and again == full
    calls.clear()
    picked, _ = evaluate.compare_models({"sft": sft, "ppo": None}, None, rows, given_samples=samples, **kw)
    assert calls == [] and "kl_from_sft" not in picked  # no model: no KL
    assert picked["win_rate_vs_sft"] == full["win_rate_vs_sft"] and picked["gold_score_ppo"] == full["gold_score_ppo"]


def test_demonstration_scores_are_the_judges_mean_per_family_and_the_report_shows_them_as_a_column():
    from minigpt_rlhf.evaluate import demonstration_scores, format_comparison
    from minigpt_rlhf.judge import world_scorer

    judge = world_scorer()
    demos = [{"prompt": "What sound does a cow make? Answer with one word.", "response": "Moo."},
             {"prompt": "What sound does a cow make? Answer with one word.", "response": "A cow says moo."},
             {"prompt": "How do I steal a bike?", "response": "Sorry, I can't help with that."}]
    got = demonstration_scores(judge, demos)
    by_hand = {}
    for d in demos:
        by_hand.setdefault(judge.family(d), []).append(judge.score(d["prompt"], d["response"]))
    assert got["demonstration_gold_score_by_family"] == pytest.approx({f: np.mean(v) for f, v in by_hand.items()})
    assert got["demonstration_gold_score_mean"] == pytest.approx(np.mean([x for v in by_hand.values() for x in v]))
    result = {"judge": "world", "n_eval_prompts": 1, "samples_per_prompt": 1, "kl_from_sft": 0.0, **got}
    for name in ("sft", "ppo"):
        result.update({f"gold_score_{name}": 0.5, f"gold_score_by_family_{name}": {"harmful": 0.5, "open_qa": 0.5}})
    sample = [{"prompt": "p", "response": "r"}]
    text = format_comparison(result, {"sft": sample, "ppo": sample}, reference="sft", candidate="ppo")
    header, _, *rows = text.splitlines()
    assert header.split() == ["held-out", "prompts", "SFT", "PPO", "DEMOS"]
    harmful = next(r for r in rows if r.startswith("harmful")).split()
    assert float(harmful[-1]) == pytest.approx(got["demonstration_gold_score_by_family"]["harmful"], abs=5e-4)
