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


def test_collection_drops_repeated_and_empty_responses(monkeypatch):
    canned = iter(["Moo.", "Moo.", "A cow says moo.", "", "Woof.", "Moo.",  # prompt 0: 3 distinct
                   "Apple.", "Apple."])  # prompt 1: 1 distinct -> dropped

    def fake_sample(model, tok, rows, *args, **kwargs):
        return [{**r, "response": next(canned), "ended": True} for r in rows]

    monkeypatch.setattr(train_rm, "sample_responses", fake_sample)
    rows = [{"prompt": "What sound does a cow make?"}, {"prompt": "List three fruits."}]
    cfg = train_rm.Config(k_min=6, k_max=6)

    class Rng:  # K = 6 for the first prompt, 2 for the second; rankings from a real generator
        def __init__(self):
            self.g = np.random.default_rng(0)

        def integers(self, lo, hi, size):
            return np.array([6, 2])

        def gumbel(self, size):
            return self.g.gumbel(size=size)

    comparisons, _ = train_rm.collect_comparisons(None, get_tokenizer(), rows, cfg,
                                                  Runtime("cpu", False, 0, 0, 1, None), Rng())
    assert len(comparisons) == 1
    assert comparisons[0]["responses"] == ["Moo.", "A cow says moo.", "Woof."]
    assert sorted(comparisons[0]["ranking"]) == [0, 1, 2]
