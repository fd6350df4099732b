"""train_rm.py's own pieces: comparison collection (repeats removed) and the held-out pair accuracy."""

import numpy as np

import train_rm
from minigpt_rlhf.common import Runtime
from minigpt_rlhf.tokenizer import get_tokenizer


def test_pair_accuracy_counts_agreements_and_half_for_ties():
    # order best -> worst: 0, 3, 1, 2. Pairs (0,3) (0,1) (0,2) (3,1) (3,2) agree; (1,2) is a reward tie
    assert train_rm.pair_accuracy([3.0, 1.0, 1.0, 2.0], [0, 3, 1, 2]) == (5.5, 6)
    # the reverse order disagrees on every untied pair
    assert train_rm.pair_accuracy([3.0, 1.0, 1.0, 2.0], [2, 1, 3, 0]) == (0.5, 6)


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

    monkeypatch.setattr(train_rm, "sample_responses", fake_sample)
    rows = [{"prompt": "What sound does a cow make?"}, {"prompt": "List three fruits."}]
    cfg = train_rm.Config(k_min=6, k_max=6, distinct_tries=0)

    comparisons, _ = train_rm.collect_comparisons(None, get_tokenizer(), rows, cfg,
                                                  Runtime("cpu", False, 0, 0, 1, None), FixedK([6, 2]))
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

    monkeypatch.setattr(train_rm, "sample_responses", fake_sample)
    rows = [{"prompt": "cow"}, {"prompt": "fruit"}]

    monkeypatch.setattr(train_rm.world, "gold_score", lambda prompt, response, eos=True: len(response) / 10)
    cfg = train_rm.Config(k_min=2, k_max=4, distinct_tries=2)
    comparisons, _ = train_rm.collect_comparisons(None, get_tokenizer(), rows, cfg,
                                                  Runtime("cpu", False, 0, 0, 1, None), FixedK([4, 2]))
    assert [c for c, _ in calls] == [["cow"] * 4 + ["fruit"] * 2, ["cow", "cow", "fruit"], ["cow"]]
    assert len({seed for _, seed in calls}) == 3  # every round draws new samples
    assert comparisons[0]["responses"] == ["Moo.", "Woof.", "Baa.", "Oink."]
    assert comparisons[1]["responses"] == ["Apple.", "Pear."]
