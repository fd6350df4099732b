"""Tests for minigpt_rlhf.tokenizer: BPE training, the vocabulary file, GPT-2's files, identities.

Everything runs offline on a vocabulary trained here, in-process, on generated text.
The trainer's speed is measured by bench/bench_bpe.py, not here.
"""

import hashlib
import itertools
import json
import os
import random
import re

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry
from tiktoken_ext.openai_public import r50k_pat_str

from minigpt_rlhf import tokenizer as tokmod
from minigpt_rlhf.data import DataError
from minigpt_rlhf.tokenizer import (
    EOS,
    PAD,
    SPLIT_PATTERN,
    Tokenizer,
    bytes_to_unicode,
    check_tokenizer_matches,
    get_tokenizer,
    load_bpe,
    save_bpe,
    train_bpe,
)

SYLLABLES = ["ka", "lo", "mi", "ren", "sta", "ple", "th", "or", "an", "is", "qu", "ee", "ght", "wo", "ed"]


def synthetic_text(n_chars: int, seed: int = 0, n_words: int = 2000) -> str:
    """English-like sentences: Zipf-distributed made-up words, capitals, numbers, punctuation."""
    rng = random.Random(seed)
    words = sorted({"".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(n_words)})
    cum_weights = list(itertools.accumulate(1 / (i + 1) for i in range(len(words))))
    out, size = [], 0
    while size < n_chars:
        ws = rng.choices(words, cum_weights=cum_weights, k=rng.randint(4, 14))
        sentence = ws[0].capitalize() + " " + " ".join(ws[1:])
        if rng.random() < 0.2:
            sentence += f" {rng.randint(0, 9999)}"
        sentence += rng.choice([".", ".", "!", "?", ","]) + rng.choice([" ", " ", "\n", "\n\n"])
        out.append(sentence)
        size += len(sentence)
    return "".join(out)


TRAIN_TEXT = synthetic_text(60_000)
VOCAB_SIZE = 512


@pytest.fixture(scope="module")
def ranks():
    return train_bpe(TRAIN_TEXT, VOCAB_SIZE)


@pytest.fixture(scope="module")
def tok(ranks):
    return Tokenizer("bpe", ranks, SPLIT_PATTERN)


# ---------------------------------------------------------------------------------------------
# Split pattern


def test_split_pattern_separates_words_numbers_punctuation_like_gpt2():
    text = "Hello world's 123!! x_y  \n\tend"
    assert re.findall(SPLIT_PATTERN, text) == [
        "Hello", " world", "'s", " 123", "!!", " x", "_", "y", "  \n", "\t", "end"]


def test_split_pattern_agrees_with_gpt2_pattern_run_by_the_regex_package():
    regex = pytest.importorskip("regex")  # installed with tiktoken; it understands \p{L}
    text = ("It's 2024: we'll see -- Café naïve x\u0301 東京タワー 😀🎉 a_b\t\tc  \n\n  d\r\n"
            "I'm 3.14 they've 100% 'quoted' (parens) [x]{y} end   ")
    assert re.findall(SPLIT_PATTERN, text) == regex.findall(tokmod.GPT2_SPLIT_PATTERN, text)


def test_split_pattern_chunks_cover_unicode_text_exactly():
    text = "Café naïve — 東京タワー 😀🎉 ½ x\u0301 \t\t  tabs\r\n\n  trailing   "
    assert "".join(re.findall(SPLIT_PATTERN, text)) == text


# ---------------------------------------------------------------------------------------------
# Training


def naive_bpe(chunks: list[str], n_merges: int) -> list[bytes]:
    """Reference BPE: recount every adjacent pair from scratch before each merge."""
    words = [[bytes([b]) for b in chunk.encode("utf-8")] for chunk in chunks]
    learned: list[bytes] = []
    for _ in range(n_merges):
        counts: dict[tuple[bytes, bytes], int] = {}
        for word in words:
            for i in range(len(word) - 1):
                counts[(word[i], word[i + 1])] = counts.get((word[i], word[i + 1]), 0) + 1
        if not counts:
            break
        a, b = min(counts, key=lambda p: (-counts[p], p[0], p[1]))
        if a + b not in learned:
            learned.append(a + b)
        for w, word in enumerate(words):
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            words[w] = merged
    return learned


def test_first_merge_is_the_most_frequent_adjacent_pair():
    # chunks "ab", " ab", " ab", " ba": (a, b) occurs 3 times, more than any other pair
    assert train_bpe("ab ab ab ba", 257)[b"ab"] == 256


def test_count_ties_go_to_the_smallest_pair_of_bytes():
    # chunks "ab", " cd": three pairs with count 1; (b" ", b"c") is smallest since " " < "a"
    ranks = train_bpe("ab cd", 257)
    assert len(ranks) == 257 and ranks[b" c"] == 256


def test_train_bpe_matches_naive_recount_merge_by_merge():
    text = synthetic_text(3_000, seed=1)
    ranks = train_bpe(text, 256 + 60)
    merged = sorted((r, t) for t, r in ranks.items() if r >= 256)
    assert [t for _, t in merged] == naive_bpe(re.findall(SPLIT_PATTERN, text), 60)


def test_train_bpe_is_deterministic(ranks):
    again = train_bpe(TRAIN_TEXT, VOCAB_SIZE)
    assert list(again.items()) == list(ranks.items())


def test_ranks_are_bytes_then_merges_of_lower_ranked_tokens(ranks):
    assert len(ranks) == VOCAB_SIZE
    assert sorted(ranks.values()) == list(range(VOCAB_SIZE))
    assert all(ranks[bytes([b])] == b for b in range(256))
    for token, rank in ranks.items():
        if rank >= 256:
            assert any(ranks.get(token[:i], rank) < rank and ranks.get(token[i:], rank) < rank
                       for i in range(1, len(token))), token


def test_train_bpe_rejects_vocab_smaller_than_bytes():
    with pytest.raises(ValueError, match="256"):
        train_bpe("abc", 100)


# ---------------------------------------------------------------------------------------------
# Tokenizer


@pytest.mark.parametrize("text", [
    "Hello, world! The café's naïve résumé costs 12.50 €.",
    "東京タワーは高い。你好，世界！",
    "emoji 😀🎉👍🏽 and a family 👨‍👩‍👧",
    "tabs\tand\t\tmore   spaces    here\n\nnew lines\r\n  indented\n",
    "   leading and trailing   ",
    "",
])
def test_decode_of_encode_is_identity(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_encoding_compresses_the_training_text(tok):
    assert len(tok.encode(TRAIN_TEXT)) < len(TRAIN_TEXT.encode("utf-8"))


def test_special_token_strings_in_text_are_plain_text(tok):
    text = f"user wrote {EOS} and {PAD} literally{EOS}"
    ids = tok.encode(text)
    assert tok.eos_id not in ids and tok.pad_id not in ids
    assert tok.decode(ids) == text


def test_eos_and_pad_are_distinct_ids_right_after_the_ranks(tok, ranks):
    assert tok.eos_id != tok.pad_id
    assert (tok.eos_id, tok.pad_id, tok.n_vocab) == (len(ranks), len(ranks) + 1, len(ranks) + 2)
    assert tok.encoding.decode_single_token_bytes(tok.eos_id) == EOS.encode()
    assert tok.encoding.decode_single_token_bytes(tok.pad_id) == PAD.encode()


def test_decode_drops_eos_and_pad(tok):
    ids = tok.encode("the end")
    assert tok.decode(ids + [tok.eos_id, tok.pad_id, tok.pad_id]) == "the end"
    assert tok.decode([tok.pad_id] + ids) == "the end"


def test_identity_describes_the_vocabulary(tok, ranks):
    ident = tok.identity()
    assert ident["name"] == "bpe"
    n = len(ranks)
    assert (ident["n_vocab"], ident["eos_id"], ident["pad_id"]) == (n + 2, n, n + 1)
    assert re.fullmatch("[0-9a-f]{16}", ident["sha256"])


# ---------------------------------------------------------------------------------------------
# Vocabulary file


def test_save_load_round_trip_keeps_ranks_and_identity(tmp_path, ranks, tok):
    path = tmp_path / "sub" / "tok.bpe"
    save_bpe(ranks, path)
    assert load_bpe(path) == ranks
    assert os.listdir(path.parent) == ["tok.bpe"]  # the temp file was renamed, not left behind
    lines = path.read_text().splitlines()
    assert lines[0] == "AA== 0" and lines[65] == "QQ== 65"  # base64 of b"\x00" and b"A"
    loaded = get_tokenizer(str(path))
    assert loaded.identity() == tok.identity()
    assert loaded.identity()["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_default_spec_without_vocab_file_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setattr(tokmod, "DEFAULT_BPE_PATH", tmp_path / "missing.bpe")
    with pytest.raises(FileNotFoundError, match=r"python -m minigpt_rlhf\.world"):
        get_tokenizer("default")


def test_default_spec_reads_the_project_vocab_file(tmp_path, monkeypatch, ranks, tok):
    save_bpe(ranks, tmp_path / "tokenizer.bpe")
    monkeypatch.setattr(tokmod, "DEFAULT_BPE_PATH", tmp_path / "tokenizer.bpe")
    assert get_tokenizer().identity() == tok.identity()


def test_missing_bpe_file_and_unknown_spec_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bpe"):
        get_tokenizer(str(tmp_path / "nope.bpe"))
    with pytest.raises(ValueError, match="gpt3"):
        get_tokenizer("gpt3")


# ---------------------------------------------------------------------------------------------
# GPT-2 files


def gpt2_byte_symbols() -> list[str]:
    """Symbol for each GPT-2 single-byte token, in id order: printable bytes keep their own
    character, the rest become chr(256), chr(257), ... (tiktoken's formulation in load.py)."""
    kept = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    shifted = [b for b in range(256) if b not in kept]
    return [chr(b) for b in kept] + [chr(256 + n) for n in range(len(shifted))]


FAKE_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("a", "t")]


def write_fake_gpt2_folder(folder):
    encoder = {sym: i for i, sym in enumerate(gpt2_byte_symbols())}
    for left, right in FAKE_MERGES:
        encoder[left + right] = len(encoder)
    encoder[EOS] = len(encoder)
    (folder / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in FAKE_MERGES)
    (folder / "vocab.bpe").write_text(merges, encoding="utf-8")


def test_bytes_to_unicode_matches_gpt2_symbols():
    mapping = bytes_to_unicode()
    assert (mapping[ord(" ")], mapping[ord("\n")], mapping[ord("A")]) == ("Ġ", "Ċ", "A")
    assert len(set(mapping.values())) == 256


def test_gpt2_folder_loads_like_tiktokens_reference_loader(tmp_path):
    write_fake_gpt2_folder(tmp_path)
    tok = get_tokenizer(f"gpt2:{tmp_path}")
    reference = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        str(tmp_path / "vocab.bpe"), str(tmp_path / "encoder.json"))
    assert tok.ranks == reference
    n_ranks = 256 + len(FAKE_MERGES)
    assert (tok.name, tok.eos_id, tok.pad_id, tok.n_vocab) == ("gpt2", n_ranks, n_ranks + 1, n_ranks + 2)


def test_gpt2_folder_tokenizer_uses_merges_and_round_trips(tmp_path):
    write_fake_gpt2_folder(tmp_path)
    tok = get_tokenizer(f"gpt2:{tmp_path}")
    the_id = 256 + FAKE_MERGES.index(("Ġt", "he"))
    assert tok.encode(" the") == [the_id]
    text = "the cat sat at the mat.\n\tÜber 東京 😀 <|endoftext|>"
    ids = tok.encode(text)
    assert the_id in ids and tok.eos_id not in ids
    assert tok.decode(ids) == text
    # tiktoken's own GPT-2 split pattern (a faster rewrite of GPT-2's) as the reference
    reference = tiktoken.Encoding("ref", pat_str=r50k_pat_str, mergeable_ranks=tok.ranks, special_tokens={})
    assert ids == reference.encode_ordinary(text)


def test_gpt2_folder_missing_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent"))):
        get_tokenizer(f"gpt2:{tmp_path / 'absent'}")
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "vocab.bpe"))):
        get_tokenizer(f"gpt2:{tmp_path}")


def test_gpt2_folder_with_mismatched_files_is_an_error(tmp_path):
    write_fake_gpt2_folder(tmp_path)
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in reversed(FAKE_MERGES))
    (tmp_path / "vocab.bpe").write_text(merges, encoding="utf-8")
    with pytest.raises(ValueError, match="do not belong together"):
        get_tokenizer(f"gpt2:{tmp_path}")


def test_gpt2_from_empty_tiktoken_cache_offline_says_how_to_get_the_files(tmp_path, monkeypatch):
    attempted = []

    def offline(url):
        attempted.append(url)
        raise ConnectionError(f"no network in this test: {url}")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "gpt2", raising=False)
    with pytest.raises(DataError, match="TIKTOKEN_CACHE_DIR") as info:
        get_tokenizer("gpt2")
    assert "gpt2:/" in str(info.value) and "vocab.bpe" in str(info.value)
    assert attempted  # the cache really was empty, so tiktoken tried (and failed) to download


# ---------------------------------------------------------------------------------------------
# Checkpoint guard


def test_check_tokenizer_matches_accepts_same_and_names_where_on_mismatch(tok, ranks):
    check_tokenizer_matches(dict(tok.identity()), tok, where="ckpt/sft.pt")
    other = Tokenizer("bpe", train_bpe(synthetic_text(20_000, seed=7), VOCAB_SIZE), SPLIT_PATTERN)
    assert other.n_vocab == tok.n_vocab  # same size: only the sha256 can tell them apart
    with pytest.raises(ValueError, match="ckpt/sft.pt") as info:
        check_tokenizer_matches(tok.identity(), other, where="ckpt/sft.pt")
    assert tok.identity()["sha256"] in str(info.value) and other.identity()["sha256"] in str(info.value)
