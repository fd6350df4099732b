"""Data files and the SFT loss mask: malformed lines name the file and line; prompt tokens are masked."""

import json

import numpy as np
import pytest
import torch

from minigpt_rlhf.data import (
    PROMPT_TEMPLATE,
    DataError,
    SFTData,
    encode_prompts,
    encode_sft_example,
    length_grouped_order,
    read_prompts,
    read_sft,
)
from minigpt_rlhf.losses import sft_loss
from minigpt_rlhf.tokenizer import SPLIT_PATTERN, Tokenizer, train_bpe


@pytest.fixture(scope="module")
def tok():
    text = "Instruction: name a fruit.\nResponse:\nApple. The cat sat on the mat. " * 20
    return Tokenizer("bpe", train_bpe(text, 300), pattern=SPLIT_PATTERN)


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "hi", "response": "yo"', "not valid JSON"),
    ('["prompt", "response"]', "expected a JSON object"),
    ('{"prompt": "hi"}', "missing key 'response'"),
    ('{"prompt": "hi", "response": 3}', "'response' should be str"),
    ('{"prompt": "  ", "response": "x"}', "'prompt' is empty"),
])
def test_malformed_sft_line_names_file_and_line(tmp_path, line, message):
    good = json.dumps({"prompt": "a", "response": "b"})
    path = write(tmp_path / "sft.jsonl", [good, good, line])
    with pytest.raises(DataError) as e:
        read_sft(path)
    assert f"{path}:3" in str(e.value) and message in str(e.value)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_prompts(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no data lines"):
        read_prompts(write(tmp_path / "empty.jsonl", [""]))


def test_prompts_longer_than_the_limit_are_skipped_and_counted(tok, tmp_path):
    rows = read_prompts(write(tmp_path / "p.jsonl", [json.dumps({"prompt": "cat"}),
                                                     json.dumps({"prompt": "the cat sat on the mat " * 10})]))
    kept, skipped = encode_prompts(tok, rows, max_prompt_len=20, source="p.jsonl")
    assert skipped == 1 and [r["prompt"] for r in kept] == ["cat"]
    with pytest.raises(DataError, match="max_prompt_len=2"):
        encode_prompts(tok, rows, max_prompt_len=2, source="p.jsonl")


def test_sft_example_masks_the_prompt_and_ends_with_eos(tok):
    ids, mask = encode_sft_example(tok, "name a fruit.", "Apple.")
    prompt_ids = tok.encode(PROMPT_TEMPLATE.format(prompt="name a fruit."))
    assert ids[: len(prompt_ids)] == prompt_ids and ids[-1] == tok.eos_id
    assert mask == [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
    assert tok.decode(ids[len(prompt_ids):-1]) == "Apple."


def test_sft_loss_ignores_prompt_and_pad_tokens(tok):
    rows = [{"prompt": "name a fruit.", "response": "Apple."},
            {"prompt": "the cat sat on the mat", "response": "The cat sat."}]
    data = SFTData(tok, rows, block_size=64)
    x, y, m = data.batch([0, 1])
    torch.manual_seed(0)
    logits = torch.randn(*x.shape, tok.n_vocab, requires_grad=True)
    loss = sft_loss(logits, y, m)
    # by hand: mean over response+EOS positions of -log softmax(logits)[target]
    terms = []
    for b in range(2):
        ids, mask = encode_sft_example(tok, rows[b]["prompt"], rows[b]["response"])
        for t in range(len(ids) - 1):
            if mask[t + 1]:
                terms.append(-torch.log_softmax(logits[b, t], -1)[ids[t + 1]])
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    # prompt and pad positions do not matter
    logits2 = logits.detach().clone()
    logits2[m == 0] = torch.randn_like(logits2[m == 0]) * 10
    torch.testing.assert_close(sft_loss(logits2, y, m), loss.detach())
    loss.backward()
    assert logits.grad[m == 0].abs().sum() == 0


def test_examples_longer_than_the_context_are_skipped(tok):
    rows = [{"prompt": "cat", "response": "Apple."}, {"prompt": "cat", "response": "the cat sat on the mat " * 30}]
    data = SFTData(tok, rows, block_size=32)
    assert len(data) == 1 and data.skipped == 1


def test_length_grouped_order_is_a_permutation_of_short_padded_batches():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 80, size=1000)  # (N,)
    order = length_grouped_order(lengths, batch_size=32, rng=np.random.default_rng(1), mega_batches=10)
    assert sorted(order.tolist()) == list(range(1000))  # every example exactly once

    def padded(o):  # positions a right-padded batch computes: batch size x its longest example
        return sum(32 * lengths[o[b: b + 32]].max() for b in range(0, 992, 32))

    random_order = np.random.default_rng(1).permutation(1000)
    assert padded(order) < 0.75 * padded(random_order)  # far less padding than a plain shuffle
    # each mega-batch of 320 is sorted: within a batch, lengths span little compared with a random batch
    spread = [np.ptp(lengths[order[b: b + 32]]) for b in range(0, 992, 32)]
    assert np.mean(spread) < 0.25 * np.ptp(lengths)
    # the batches come in random order, not sorted by length
    maxima = [lengths[order[b: b + 32]].max() for b in range(0, 992, 32)]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
    # the same generator state gives the same order; another seed another one
    again = length_grouped_order(lengths, 32, np.random.default_rng(1), mega_batches=10)
    other = length_grouped_order(lengths, 32, np.random.default_rng(2), mega_batches=10)
    assert np.array_equal(order, again) and not np.array_equal(order, other)


def test_length_grouped_order_keeps_the_short_last_batch_at_the_end():
    lengths = np.arange(70)  # 2 full batches of 32 and a batch of 6
    order = length_grouped_order(lengths, batch_size=32, rng=np.random.default_rng(0), mega_batches=1)
    assert sorted(order.tolist()) == list(range(70))
    # mega-batches of one batch each: the batches are the shuffle's consecutive slices, and the short one
    # (the shuffle's last 6 examples) comes last, so that every full-size slice of the order is one batch
    shuffle = np.random.default_rng(0).permutation(70)
    assert set(order[64:].tolist()) == set(shuffle[64:].tolist())
    slices = {frozenset(shuffle[:32].tolist()), frozenset(shuffle[32:64].tolist())}
    assert {frozenset(order[:32].tolist()), frozenset(order[32:64].tolist())} == slices


@pytest.mark.slow
def test_scripts_stop_on_bad_data_with_the_file_and_line_not_a_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "corpus_train.txt").write_text("The cat sat on the mat.\n\nA dog ran.\n" * 50)
    (tmp_path / "corpus_val.txt").write_text("The cat sat on the mat.\n" * 20)
    write(tmp_path / "sft_train.jsonl", ['{"prompt": "Name a fruit.", "response": "Apple."}',
                                         '{"prompt": "Name a fruit.", "response": "Pear."'])  # line 2: no }
    write(tmp_path / "sft_val.jsonl", ['{"prompt": "Name a fruit.", "response": "Apple."}'])
    write(tmp_path / "eval_prompts.jsonl", ['{"prompt": "Name a fruit."}'])
    missing = tmp_path / "missing"
    for data_dir, expected in ((tmp_path, f"{tmp_path / 'sft_train.jsonl'}:2: not valid JSON"),
                               (missing, f"--corpus: data file {missing / 'corpus_train.txt'} not found (pretraining")):
        p = subprocess.run([sys.executable, "train_sft.py", f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'out'}"],
                           cwd=root, capture_output=True, text=True, timeout=120)
        assert p.returncode == 1
        assert f"error: {expected}" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out" / "sft").exists()  # nothing was written


def test_few_shot_prompt_puts_the_demonstrations_that_fit_before_the_prompt_in_the_one_format(tok):
    from minigpt_rlhf.data import few_shot_demos, few_shot_prompt

    demos = [{"prompt": "name a fruit.", "response": "Apple."}, {"prompt": "name a cat.", "response": "The cat."}]
    shot = [tok.encode(PROMPT_TEMPLATE.format(prompt=d["prompt"]) + d["response"]) + [tok.eos_id] for d in demos]
    prompt = tok.encode(PROMPT_TEMPLATE.format(prompt="name a mat."))
    room = len(shot[0]) + len(shot[1]) + len(prompt)
    assert few_shot_prompt(tok, "name a mat.", demos, room) == shot[0] + shot[1] + prompt
    assert few_shot_prompt(tok, "name a mat.", demos, room - 1) == shot[0] + prompt  # the second no longer fits
    assert few_shot_prompt(tok, "name a mat.", demos, len(prompt)) == prompt
    many = [{"prompt": f"p{i}", "response": "x" * (i % 7 + 1)} for i in range(40)]
    picked = few_shot_demos(many, 3, seed=0)
    assert len(picked) == 3 and picked == few_shot_demos(many, 3, seed=0)
    size = [len(d["prompt"]) + len(d["response"]) for d in picked]
    assert size == sorted(size)  # shortest first
    pool = [many[i] for i in np.random.default_rng(0).permutation(40)[:12]]  # the seeded draw of 4n, by hand
    assert max(size) <= sorted(len(d["prompt"]) + len(d["response"]) for d in pool)[2]
