"""Export to Hugging Face's GPT-2 format, checked against the transformers library (a test-only dependency):
the exported policy's logits, the exported tokenizer's ids and the exported reward model's scores are ours."""

import json
import random
import sys

import pytest
import torch

from minigpt_rlhf.checkpoint import save_checkpoint
from minigpt_rlhf.export import bpe_merges, export_model, main
from minigpt_rlhf.model import GPT, GPTConfig, from_pretrained, position_ids_from_mask, swap_unembedding
from minigpt_rlhf.reward import collate_sequences, encode_responses, reward_at_eos
from minigpt_rlhf.sampling import generate, left_pad
from minigpt_rlhf.tokenizer import DEFAULT_BPE_PATH, EOS, PAD, bytes_to_unicode, get_tokenizer

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

TEXTS = [
    "Instruction: Name the capital of Zorvia.\nResponse:\nThe capital of Zorvia is Mellow.",
    "  two  spaces, tabs\tand\nnew lines\n\n, digits 12345 and punctuation!?... it's, we'll",
    "Über 東京 😀 naïve café x__y  \u00a0 end",
    "literal <|pad|> and <|endoftext|> typed as text",
]


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def tiny_model(tok, bias=True, seed=0) -> GPT:
    """A small GPT with every parameter random (LayerNorm gains and biases too), so that a weight put in
    the wrong place or left untransposed changes the outputs. The vocabulary is padded past n_vocab."""
    torch.manual_seed(seed)
    config = GPTConfig(block_size=48, vocab_size=(tok.n_vocab + 63) // 64 * 64, n_layer=2, n_head=2, n_embd=32,
                       bias=bias)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def left_padded_batch(tok):
    prompts = [tok.encode(t)[:20] for t in TEXTS[:3]] + [tok.encode("Hi")]
    tokens, mask = left_pad(prompts, tok.pad_id)  # (B, P)
    assert (mask == 0).any()
    return tokens, mask


@pytest.mark.parametrize("bias", [True, False])
def test_exported_policy_logits_equal_ours_on_a_left_padded_batch(tmp_path, tok, bias):
    model = tiny_model(tok, bias)
    export_model(model, tok, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    tokens, mask = left_padded_batch(tok)
    with torch.no_grad():
        ours = model(tokens, attention_mask=mask)  # (B, P, V)
        theirs = hf(input_ids=tokens, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    assert theirs.shape == ours.shape == (*tokens.shape, model.config.vocab_size)  # the padded vocabulary too
    real = mask.bool()  # padding positions' outputs are never read, by either model
    torch.testing.assert_close(theirs[real], ours[real], atol=1e-5, rtol=0)


def test_from_pretrained_of_export_is_the_same_model(tmp_path, tok):
    model = tiny_model(tok)
    export_model(model, tok, tmp_path)
    back = from_pretrained(tmp_path)
    assert back.config == model.config
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(theirs[name], ours[name], atol=0, rtol=0, msg=name)


def test_export_without_biases_writes_zero_biases_and_loads_to_the_same_function(tmp_path, tok):
    model = tiny_model(tok, bias=False)
    export_model(model, tok, tmp_path)
    back = from_pretrained(tmp_path).eval()
    assert all(float(p.detach().abs().max()) == 0 for n, p in back.named_parameters() if n.endswith(".bias"))
    tokens, mask = left_padded_batch(tok)
    real = mask.bool()
    with torch.no_grad():
        torch.testing.assert_close(back(tokens, attention_mask=mask)[real], model(tokens, attention_mask=mask)[real],
                                   atol=1e-6, rtol=0)


def test_exported_config_keeps_the_padded_vocabulary_and_our_special_ids(tmp_path, tok):
    model = tiny_model(tok)
    export_model(model, tok, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["vocab_size"] == model.config.vocab_size > tok.n_vocab
    assert (config["eos_token_id"], config["pad_token_id"]) == (tok.eos_id, tok.pad_id)
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert generation["suppress_tokens"] == [tok.pad_id] + list(range(tok.n_vocab, model.config.vocab_size))


def test_exported_tokenizer_encodes_and_decodes_like_ours_special_tokens_included(tmp_path, tok):
    export_model(tiny_model(tok), tok, tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert (hf.eos_token, hf.pad_token) == (EOS, PAD)
    assert (hf.eos_token_id, hf.pad_token_id) == (tok.eos_id, tok.pad_id)
    assert len(hf) == tok.n_vocab
    texts = TEXTS + (DEFAULT_BPE_PATH.parent / "sft_train.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    for text in texts:
        ids = tok.encode(text)
        assert hf.encode(text, add_special_tokens=False, split_special_tokens=True) == ids, text
        assert hf.decode(ids) == text
    rng = random.Random(0)  # random strings of letters, digits, punctuation, odd whitespace and Unicode
    alphabet = list("abcXYZ019 .,;:'!?-_()\"\n\t") + ["  ", "\r\n", "é", "ß", "東", "😀", "\u0301", "\u00a0", "'s",
                                                     "'ll", "’", "٣", "Ⅻ", "\u2028", "ǅ"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
        assert hf.encode(text, add_special_tokens=False) == tok.encode(text), ascii(text)
    # the special tokens: written as text they become our EOS / PAD ids, and decoding can skip them
    ids = tok.encode("Kelvar.")
    assert hf.encode("Kelvar." + EOS + PAD, add_special_tokens=False) == ids + [tok.eos_id, tok.pad_id]
    assert hf.decode(ids + [tok.eos_id, tok.pad_id], skip_special_tokens=True) == tok.decode(ids + [tok.eos_id])
    assert hf.decode([tok.eos_id, tok.pad_id]) == EOS + PAD
    # batches pad with PAD on the side asked for
    batch = hf(["Hi", "Kelvar is here."], padding=True, padding_side="left")
    assert batch["input_ids"][0][0] == tok.pad_id and batch["attention_mask"][0][0] == 0


def test_bpe_merges_replays_the_training_merges_of_a_gpt2_style_vocabulary(tok):
    merges = bpe_merges(tok.ranks)
    assert len(merges) == len(tok.ranks) - 256
    for rank, (a, b) in enumerate(merges, start=256):  # each merge glues two earlier tokens into token `rank`
        assert tok.ranks[a + b] == rank and tok.ranks[a] < rank and tok.ranks[b] < rank


FAKE_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("a", "t"), ("Ġ", "c"), ("Ġc", "at")]


def write_gpt2_folder(folder):
    """GPT-2's encoder.json + vocab.bpe, with a few merges: the format of the GPT-2 release."""
    symbols = bytes_to_unicode()
    encoder = {symbols[b]: i for i, b in enumerate(sorted(symbols, key=lambda b: (ord(symbols[b]) >= 256, b)))}
    for left, right in FAKE_MERGES:
        encoder[left + right] = len(encoder)
    encoder[EOS] = len(encoder)
    (folder / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in FAKE_MERGES),
                                      encoding="utf-8")
    return encoder


def test_gpt2_vocabulary_exports_gpt2s_files_and_the_same_ids(tmp_path):
    src, out = tmp_path / "gpt2", tmp_path / "out"
    src.mkdir()
    encoder = write_gpt2_folder(src)
    tok = get_tokenizer(f"gpt2:{src}")
    export_model(tiny_model(tok), tok, out)
    assert json.loads((out / "vocab.json").read_text(encoding="utf-8")) == encoder
    assert (out / "merges.txt").read_text(encoding="utf-8") == (src / "vocab.bpe").read_text(encoding="utf-8")
    text = "the cat sat at the mat.\n\tÜber 東京 😀 it's"
    ids = tok.encode(text)
    assert 256 + FAKE_MERGES.index(("Ġc", "at")) in ids
    fast = transformers.AutoTokenizer.from_pretrained(out)
    slow = transformers.GPT2Tokenizer.from_pretrained(out, pad_token=PAD)  # GPT-2's own class on GPT-2's files
    for hf in (fast, slow):
        assert hf.encode(text, add_special_tokens=False) == ids
        assert hf.decode(ids) == text
        assert (hf.eos_token_id, hf.pad_token_id) == (tok.eos_id, tok.pad_id)


def test_exported_reward_model_scores_equal_ours_on_a_batch(tmp_path, tok):
    rm = swap_unembedding(tiny_model(tok)).eval()
    with torch.no_grad():
        rm.lm_head.bias.fill_(0.7)  # a head bias, which GPT-2's bias-free `score` layer must still reproduce
    export_model(rm, tok, tmp_path)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "GPT2ForSequenceClassification" and hf.config.num_labels == 1
    responses = ["Mellow.", "The capital of Zorvia is Mellow, I think.", "No.", "Sure! Mellow. I hope this helps."]
    seqs = encode_responses(tok, "What is the capital of Zorvia?", responses)
    tokens, mask = collate_sequences(seqs, tok.pad_id)  # right-padded, as the RM is trained and used
    with torch.no_grad():
        ours = reward_at_eos(rm, tokens, mask)  # (B,)
        theirs = hf(input_ids=tokens, attention_mask=mask).logits.squeeze(-1)
        # by hand: the scalar at each row's EOS, from an unpadded forward of that row alone
        by_hand = torch.stack([rm(torch.tensor([s]))[0, -1] for s in seqs])
        # left padding reads the same EOS
        left, left_mask = left_pad(seqs, tok.pad_id)
        theirs_left = hf(input_ids=left, attention_mask=left_mask, position_ids=position_ids_from_mask(left_mask))
    assert tokens[mask.bool()].eq(tok.eos_id).sum() == len(seqs)
    torch.testing.assert_close(ours, by_hand, atol=1e-5, rtol=0)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    torch.testing.assert_close(theirs_left.logits.squeeze(-1), ours, atol=1e-5, rtol=0)


def test_exported_policy_greedy_generate_equals_ours(tmp_path, tok):
    model = tiny_model(tok)
    with torch.no_grad():  # large PAD and padding rows: the ids a sampler must ban get the largest logits
        model.transformer.wte.weight[tok.pad_id:] *= 20
    export_model(model, tok, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    prompt = tok.encode("Instruction: Name the capital of Zorvia.\nResponse:\n")
    ours = generate(model, [prompt], 12, tok.eos_id, tok.pad_id, greedy=True, n_vocab=tok.n_vocab)
    ours_ids = ours.response[0, : int(ours.response_mask[0].sum())].tolist()
    # unbanned, this model's argmax is a padding id
    unbanned = generate(model, [prompt], 12, tok.eos_id, tok.pad_id, greedy=True)
    assert unbanned.response[0, 0] >= tok.pad_id
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          do_sample=False, max_new_tokens=12)
    assert out[0, len(prompt):].tolist() == ours_ids


def test_export_command_writes_a_loadable_folder_with_the_checkpoints_tokenizer(tmp_path, tok, capsys):
    from train_ppo import Config

    model = tiny_model(tok)
    value = swap_unembedding(model)
    save_checkpoint(tmp_path / "ppo.pt", model, tok, Config(), stage="ppo", value_model=value.state_dict())
    main([str(tmp_path / "ppo.pt"), str(tmp_path / "hf")])
    assert "model.safetensors" in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json"):
        assert (tmp_path / "hf" / name).is_file(), name
    assert from_pretrained(tmp_path / "hf").state_dict().keys() == model.state_dict().keys()

    main([str(tmp_path / "ppo.pt"), str(tmp_path / "value"), "--value_model=True"])
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "value").eval()
    x = torch.tensor([tok.encode("Hi there.") + [tok.eos_id]])
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=x).logits[0, 0], value.eval()(x)[0, -1], atol=1e-5, rtol=0)
    assert hf.config.id2label == {0: "value"}


def test_export_command_errors_name_the_checkpoint(tmp_path, tok, monkeypatch):
    model = tiny_model(tok)
    save_checkpoint(tmp_path / "sft.pt", model, tok, stage="sft")
    with pytest.raises(SystemExit, match="sft.pt holds no value model"):
        main([str(tmp_path / "sft.pt"), str(tmp_path / "out"), "--value_model=True"])
    with pytest.raises(SystemExit, match="absent.pt: checkpoint not found"):
        main([str(tmp_path / "absent.pt"), str(tmp_path / "out")])
    src = tmp_path / "gpt2"
    src.mkdir()
    write_gpt2_folder(src)
    with pytest.raises(SystemExit, match="sft.pt: tokenizer mismatch"):
        main([str(tmp_path / "sft.pt"), str(tmp_path / "out"), f"--tokenizer=gpt2:{src}"])
    with pytest.raises(SystemExit, match="usage"):
        main([str(tmp_path / "sft.pt")])
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "tokenizers", None)  # the optional package is not installed
        with pytest.raises(SystemExit, match="needs the optional package tokenizers"):
            main([str(tmp_path / "sft.pt"), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # nothing written by a failed export
