"""Data files and the SFT loss mask: malformed lines name the file and line; prompt tokens are masked."""

import json

import pytest
import torch

from minigpt_rlhf.data import (
    PROMPT_TEMPLATE,
    DataError,
    SFTData,
    encode_prompts,
    encode_sft_example,
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
