"""The reward model's data: comparison collection (repeats removed) and the held-out pair accuracy."""

import numpy as np

import train_rm
from minigpt_rlhf import comparisons as comparisons_module
from minigpt_rlhf.common import Runtime
from minigpt_rlhf.comparisons import collect_comparisons
from minigpt_rlhf.evaluate import pair_accuracy
from minigpt_rlhf.judge import Scorer, world_scorer
from minigpt_rlhf.tokenizer import get_tokenizer


def test_pair_accuracy_counts_agreements_and_half_for_ties():
    # order best -> worst: 0, 3, 1, 2. Pairs (0,3) (0,1) (0,2) (3,1) (3,2) agree; (1,2) is a reward tie
    assert pair_accuracy([3.0, 1.0, 1.0, 2.0], [0, 3, 1, 2]) == (5.5, 6)
    # the reverse order disagrees on every untied pair
    assert pair_accuracy([3.0, 1.0, 1.0, 2.0], [2, 1, 3, 0]) == (0.5, 6)


class FixedK:
    """A generator stand-in: the K of each prompt is fixed; the labeler's Gumbel noise is real."""

    def __init__(self, ks):
        self.ks, self.g = np.array(ks), np.random.default_rng(0)

    def integers(self, lo, hi, size):
        return self.ks

    def gumbel(self, size):
        return self.g.gumbel(size=size)


def test_collection_drops_repeated_and_empty_responses_without_extra_rounds(monkeypatch):
    canned = iter(["Moo.", "Moo.", "A cow says moo.", "", "Woof.", "Moo.",  # prompt 0: 3 distinct
                   "Apple.", "Apple."])  # prompt 1: 1 distinct -> dropped

    def fake_sample(model, tok, rows, *args, **kwargs):
        return [{**r, "response": next(canned), "ended": True} for r in rows]

    monkeypatch.setattr(comparisons_module, "sample_responses", fake_sample)
    rows = [{"prompt": "What sound does a cow make?"}, {"prompt": "List three fruits."}]
    cfg = train_rm.Config(k_min=6, k_max=6, distinct_tries=0)

    comparisons, _ = collect_comparisons(None, get_tokenizer(), rows, cfg,
                                                  Runtime("cpu", False, 0, 0, 1, None), FixedK([6, 2]), world_scorer())
    assert len(comparisons) == 1
    assert comparisons[0]["responses"] == ["Moo.", "A cow says moo.", "Woof."]
    assert sorted(comparisons[0]["ranking"]) == [0, 1, 2]


def test_collection_replaces_repeats_with_new_samples_until_k_distinct(monkeypatch):
    # canned samples per prompt, in the order they are drawn; each call must ask only for what is missing
    canned = {"cow": iter(["Moo.", "Moo.", "", "Woof.",  # round 0: K = 4, 2 distinct
                           "Moo.", "Baa.",  # round 1: 2 wanted, 1 new
                           "Oink."]),  # round 2: 1 wanted, 1 new -> 4 distinct
              "fruit": iter(["Apple.", "Apple.",  # round 0: K = 2, 1 distinct
                             "Pear."])}  # round 1: 1 wanted -> 2 distinct
    calls = []

    def fake_sample(model, tok, rows, *args, seed=0, **kwargs):
        calls.append(([r["prompt"] for r in rows], seed))
        return [{**r, "response": next(canned[r["prompt"]]), "ended": True} for r in rows]

    monkeypatch.setattr(comparisons_module, "sample_responses", fake_sample)
    rows = [{"prompt": "cow"}, {"prompt": "fruit"}]

    labeler = Scorer("length", lambda prompt, response: len(response) / 10)
    cfg = train_rm.Config(k_min=2, k_max=4, distinct_tries=2)
    comparisons, _ = collect_comparisons(None, get_tokenizer(), rows, cfg,
                                                  Runtime("cpu", False, 0, 0, 1, None), FixedK([4, 2]), labeler)
    assert [c for c, _ in calls] == [["cow"] * 4 + ["fruit"] * 2, ["cow", "cow", "fruit"], ["cow"]]
    assert len({seed for _, seed in calls}) == 3  # every round draws new samples
    assert comparisons[0]["responses"] == ["Moo.", "Woof.", "Baa.", "Oink."]
    assert comparisons[1]["responses"] == ["Apple.", "Pear."]


def test_a_user_labeler_ranks_collected_responses_through_plackett_luce(monkeypatch):
    """A user's score(prompt, response) labels the comparisons: with K = 2 and two distinct scores, the labeler
    calibrates its noise to the target agreement, so the higher-scored response comes first with probability
    sigmoid(gap / T) = p, where p^2 + (1 - p)^2 = target_agreement."""
    def fake_sample(model, tok, rows, *args, **kwargs):
        texts = ["short", "a longer answer"] * len(rows)  # K = 2: each prompt's two samples are consecutive
        return [{**r, "response": text, "ended": True} for r, text in zip(rows, texts)]

    monkeypatch.setattr(comparisons_module, "sample_responses", fake_sample)
    labeler = Scorer("length", lambda prompt, response: float(len(response)))
    rows = [{"prompt": f"Say something {i}."} for i in range(2000)]
    cfg = train_rm.Config(k_min=2, k_max=2, distinct_tries=0, target_agreement=0.8)
    comparisons, temperature = collect_comparisons(None, get_tokenizer(), rows, cfg,
                                                            Runtime("cpu", False, 0, 0, 1, None),
                                                            np.random.default_rng(0), labeler)
    p = 0.5 + np.sqrt(2 * 0.8 - 1) / 2  # p^2 + (1 - p)^2 = 0.8, solved for p > 1/2
    assert abs(1 / (1 + np.exp(-10 / temperature)) - p) < 1e-6  # the gap of the two scores is 15 - 5 = 10
    longer_first = np.mean([c["responses"][c["ranking"][0]] == "a longer answer" for c in comparisons])
    assert abs(longer_first - p) < 3 * np.sqrt(p * (1 - p) / len(rows))
