"""The reward model: reward read at EOS, whole prompts per forward pass, comparison files, normalisation."""

import json

import pytest
import torch

from minigpt_rlhf.comparisons import read_comparisons
from minigpt_rlhf.data import DataError
from minigpt_rlhf.losses import batched_kwise_ranking_loss
from minigpt_rlhf.model import GPT, GPTConfig, swap_unembedding
from minigpt_rlhf.reward import (
    collate_sequences,
    encode_responses,
    last_token_index,
    normalization_demos,
    normalize_head,
    prompt_batches,
    reward_at_eos,
    score_comparisons,
)
from minigpt_rlhf.tokenizer import SPLIT_PATTERN, Tokenizer, train_bpe


@pytest.fixture(scope="module")
def tok():
    return Tokenizer("bpe", train_bpe("Instruction: say hi.\nResponse:\nHi there! Bye now. " * 30, 300), SPLIT_PATTERN)


def tiny_rm(tok, seed=0):
    torch.manual_seed(seed)
    lm = GPT(GPTConfig(block_size=64, vocab_size=tok.n_vocab, n_layer=2, n_head=2, n_embd=32))
    return swap_unembedding(lm).eval()


def test_last_token_index_left_right_and_both_paddings():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    expected = [max(i for i, m in enumerate(row) if m) for row in mask.tolist()]  # brute force
    assert last_token_index(mask).tolist() == expected


def test_reward_is_read_at_the_eos_token_whatever_the_padding(tok):
    rm = tiny_rm(tok)
    seq = encode_responses(tok, "say hi.", ["Hi there!"])[0]
    assert seq[-1] == tok.eos_id
    with torch.no_grad():
        alone = rm(torch.tensor([seq]))[0, -1]  # scalar at EOS, no padding at all
        for left, right in [(0, 5), (4, 0), (3, 3)]:
            garbage = [7] * right  # garbage after EOS, masked out
            tokens = torch.tensor([[tok.pad_id] * left + seq + garbage])
            mask = torch.tensor([[0] * left + [1] * len(seq) + [0] * right])
            torch.testing.assert_close(reward_at_eos(rm, tokens, mask)[0], alone, atol=1e-5, rtol=0)
        # and NOT at position T-1 of a right-padded batch
        tokens = torch.tensor([seq + [tok.pad_id] * 5])
        mask = torch.tensor([[1] * len(seq) + [0] * 5])
        assert not torch.allclose(rm(tokens, attention_mask=mask)[0, -1], alone)


def test_all_responses_of_the_batch_are_scored_in_one_forward_pass(tok):
    rm = tiny_rm(tok)
    calls = []
    rm.register_forward_hook(lambda *a: calls.append(1))
    groups = [encode_responses(tok, "say hi.", ["Hi.", "Hi there!", "Bye.", "Hi hi hi."]),
              encode_responses(tok, "say bye.", ["Bye now.", "Hi."])]
    with torch.no_grad():
        flat = score_comparisons(rm, groups, tok.pad_id, "cpu")
    assert len(calls) == 1 and flat.shape == (6,)
    with torch.no_grad():  # each equals the response scored alone
        for i, seq in enumerate([s for g in groups for s in g]):
            torch.testing.assert_close(flat[i], rm(torch.tensor([seq]))[0, -1], atol=1e-5, rtol=0)


def test_batches_hold_whole_prompts():
    rng = __import__("numpy").random.default_rng(0)
    batches = prompt_batches(23, 4, rng)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(23)) and all(len(b) <= 4 for b in batches)


def test_tiny_rm_learns_easy_comparisons(tok):
    """Responses ranked by a fixed rule on their text (greetings first, then shorter farewells): learnable."""
    rm = tiny_rm(tok, seed=1)
    good, bad = ["Hi there!", "Hi there! Hi!"], ["Bye now.", "Bye.", "Bye bye."]
    data = []
    g = torch.Generator().manual_seed(0)
    for i in range(64):
        resp = [good[i % 2]] + bad[: 1 + i % 3]
        perm = torch.randperm(len(resp), generator=g).tolist()
        shuffled = [resp[j] for j in perm]
        ranking = [perm.index(j) for j in range(len(resp))]  # the order of `resp`, in shuffled positions
        data.append((encode_responses(tok, "say hi.", shuffled), ranking))
    opt = torch.optim.AdamW(rm.parameters(), lr=3e-3)
    rm.train()
    for step in range(60):
        batch = data[(step * 8) % 64: (step * 8) % 64 + 8]
        rewards = score_comparisons(rm, [b[0] for b in batch], tok.pad_id, "cpu")
        loss, stats = batched_kwise_ranking_loss(rewards, [b[1] for b in batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    rm.eval()
    with torch.no_grad():
        rewards = score_comparisons(rm, [b[0] for b in data], tok.pad_id, "cpu")
    _, stats = batched_kwise_ranking_loss(rewards, [b[1] for b in data])
    assert float(stats["accuracy"]) > 0.95


def test_normalisation_gives_demonstrations_mean_zero_and_samples_unit_std(tok):
    rm = tiny_rm(tok)
    demos = [s for s in encode_responses(tok, "say hi.", ["Hi there!", "Hi.", "Bye now.", "Hi hi."])]
    samples = encode_responses(tok, "say bye.", ["Bye.", "Hi there! Bye now.", "Bye bye.", "Hi."])
    with torch.no_grad():
        d = reward_at_eos(rm, *collate_sequences(demos, tok.pad_id))
        s = reward_at_eos(rm, *collate_sequences(samples, tok.pad_id))
        normalize_head(rm, d, s)
        d2 = reward_at_eos(rm, *collate_sequences(demos, tok.pad_id))
        s2 = reward_at_eos(rm, *collate_sequences(samples, tok.pad_id))
    assert abs(float(d2.mean())) < 1e-4
    torch.testing.assert_close(s2.std(), torch.tensor(1.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(s2, (s - d.mean()) / s.std(), atol=1e-4, rtol=0)


def test_the_gain_is_set_on_a_seeded_random_sample_of_comparisons_not_the_first_lines():
    """A comparisons file may be sorted (the world's by task family): the 200 whose responses set the unit-std gain
    are drawn at random with the run's seed, in file order."""
    from minigpt_rlhf.reward import gain_samples

    rows = [{"prompt": f"p{i}", "family": ["a", "b", "c"][i // 200]} for i in range(600)]
    picked = gain_samples(rows, seed=1337)
    assert len(picked) == 200 and picked == gain_samples(rows, seed=1337)
    assert picked != rows[:200] and {r["family"] for r in picked} == {"a", "b", "c"}
    assert [int(r["prompt"][1:]) for r in picked] == sorted(int(r["prompt"][1:]) for r in picked)
    assert gain_samples(rows, seed=1) != picked and gain_samples(rows[:150], seed=1337) == rows[:150]


def test_a_degenerate_reward_model_is_a_clear_error_not_a_huge_gain(tok):
    """An RM whose rewards barely differ over the samples would get a gain of 1/std: its rounding would become
    full-size rewards. Refused, and the head is left as it was."""
    rm = tiny_rm(tok)
    before = {k: v.clone() for k, v in rm.lm_head.state_dict().items()}
    demos = torch.tensor([0.5, 0.4, 0.6])
    with pytest.raises(DataError, match="same reward to every sample"):
        normalize_head(rm, demos, torch.tensor([0.3, 0.3 + 1e-5, 0.3 - 1e-5, 0.3]))
    assert all(torch.equal(before[k], v) for k, v in rm.lm_head.state_dict().items())
    normalize_head(rm, demos, torch.tensor([0.3, 0.31, 0.29, 0.3]))  # a small but real spread: std 0.008
    torch.testing.assert_close(rm.lm_head.bias, (before["bias"] - 0.5) / torch.tensor([0.3, 0.31, 0.29, 0.3]).std())


@pytest.mark.parametrize("obj, message", [
    ({"prompt": "p", "responses": ["a"], "ranking": [0]}, "at least 2 responses"),
    ({"prompt": "p", "responses": ["a", "b"], "ranking": [0, 0]}, "permutation"),
    ({"prompt": "p", "responses": ["a", "b"], "ranking": [0, 2]}, "permutation"),
    ({"prompt": "p", "responses": ["a", " "], "ranking": [0, 1]}, "non-empty"),
    ({"prompt": "p", "chosen": "a", "rejected": ""}, "non-empty"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, "prompt"),
    ({"prompt": "p", "answers": ["a", "b"]}, "expected 'responses'"),
])
def test_bad_comparison_lines_name_the_line(tmp_path, obj, message):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(obj) + "\n")
    with pytest.raises(DataError) as e:
        read_comparisons(path)
    assert f"{path}:2" in str(e.value) and message in str(e.value)


def test_pairwise_lines_are_k_equals_2(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "good", "rejected": "bad"}) + "\n"
                    + json.dumps({"prompt": "q", "responses": ["x", "y", "z"], "ranking": [2, 0, 1]}) + "\n")
    rows = read_comparisons(path)
    assert rows[0]["responses"] == ["good", "bad"] and rows[0]["ranking"] == [0, 1]
    assert rows[1]["ranking"] == [2, 0, 1]


def test_a_response_cut_off_without_eos_is_scored_at_its_last_token_with_no_eos_appended(tok):
    done, cut = encode_responses(tok, "say hi.", ["Hi there!", "Hi there!"], ended=[True, False])
    assert done == cut + [tok.eos_id] and cut[-1] != tok.eos_id
    rm = tiny_rm(tok)
    scores = score_comparisons(rm, [[done, cut]], tok.pad_id, "cpu")
    with torch.no_grad():  # each scored alone, at its own last token
        alone = [rm(torch.tensor([s]))[0, -1] for s in (done, cut)]
    assert torch.allclose(scores, torch.stack(alone), atol=1e-5)


def test_normalisation_demonstrations_cover_every_family_of_a_file_sorted_by_family():
    from minigpt_rlhf.data import read_sft

    demos = read_sft("data/sft_train.jsonl")  # the world's file, sorted by family
    families = {d["family"] for d in demos}
    picked = normalization_demos(demos, 512, seed=1337)
    assert len(picked) == 512 and {d["family"] for d in picked} == families
    assert len({d["_where"] for d in picked}) == 512  # no demonstration twice
    # the mean over the sample is close to the mean over the file: each family is there in about its share
    for f in families:
        share = sum(d["family"] == f for d in picked) / 512
        assert abs(share - sum(d["family"] == f for d in demos) / len(demos)) < 0.06
    assert normalization_demos(demos, 512, seed=1337) == picked  # seeded
    assert normalization_demos(demos[:10], 512, seed=1) == demos[:10]  # fewer than asked: all of them
