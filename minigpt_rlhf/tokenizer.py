"""Byte-level BPE: train a vocabulary, save it, and encode text with it through tiktoken.

Byte-pair encoding (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword
Units"), in the byte-level form of GPT-2 (Radford et al. 2019, section 2.2): start from the 256
single bytes, so every string has an encoding and nothing is ever "unknown", then repeatedly glue
together the most frequent adjacent pair of tokens into a new token. The list of merges, in the
order they were learned, is the whole tokenizer.

We store it the way tiktoken does: "mergeable ranks", a dict from a token's bytes to its rank.
The 256 single bytes have ranks 0..255 and the k-th merge gets rank 255 + k. Encoding a piece of
text repeatedly merges the adjacent pair whose concatenation has the lowest rank, which replays
the training merges in order. We train in Python (clear, a few seconds) and encode with tiktoken
(Rust, fast), so the two halves share nothing but the ranks and the split pattern.

Before counting pairs, text is split into chunks by a regex (GPT-2's trick): letters, digits and
punctuation go to separate chunks, a word keeps its leading space, so merges never cross a word
boundary and " dog" is one token rather than "dog." / "dog!" / "dog?" three.

Token ids: ranks are ids 0..n_ranks-1, then two special tokens, EOS `<|endoftext|>` = n_ranks and
PAD `<|pad|>` = n_ranks + 1. GPT-2's own vocabulary fits the same layout: 50256 ranks, EOS 50256,
and we add PAD 50257. PAD is distinct from EOS so that EOS is never taken for padding (our masks come from
lengths and `ended`, but a mask built from `ids != pad_id`, as transformers builds one, must keep the EOS
token at which the reward model reads its score).

    tok = get_tokenizer()              # data/tokenizer.bpe, made by `python -m minigpt_rlhf.world`
    tok = get_tokenizer("gpt2")        # tiktoken's cached GPT-2 vocabulary
    tok = get_tokenizer("gpt2:/dir")   # GPT-2's vocab.bpe + encoder.json (or merges.txt + vocab.json) in /dir
    tok = get_tokenizer("my.bpe")      # a vocabulary trained on your own text:

    python -m minigpt_rlhf.tokenizer --vocab_size=2048 --out=my.bpe my_data/corpus_train.txt my_data/sft_train.jsonl
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import heapq
import os
import re
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import tiktoken

from .data import DataError, decode_text, parse_json, read_bytes, read_text, split_lines

EOS = "<|endoftext|>"
PAD = "<|pad|>"

DEFAULT_BPE_PATH = Path(__file__).resolve().parent.parent / "data" / "tokenizer.bpe"

# GPT-2's split pattern (openai/gpt-2, src/encoder.py), rewritten for Python's `re`, which has no
# \p{L} / \p{N}: a letter is a word character that is neither a digit nor "_" ([^\W\d_]), a digit
# is \d, and everything else that is not whitespace (including "_") is punctuation. The five
# alternatives cover every character, so joining the chunks gives back the text exactly.
# The same string is handed to tiktoken, whose Rust engine defines \w and \s by slightly different
# Unicode tables (e.g. combining marks); rare characters may then be split differently at encode
# time than at training time, which costs a little compression but never correctness.
SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""

# GPT-2's original pattern (openai/gpt-2, src/encoder.py). Only tiktoken runs it: Python's `re`
# cannot, but tiktoken uses its own regex engine.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


# ----------------------------------------------------------------------------------------------
# Training


def train_bpe(text: str, vocab_size: int, pattern: str = SPLIT_PATTERN) -> dict[bytes, int]:
    """Learn byte-level BPE merges on `text` until the vocabulary has `vocab_size` tokens.

    Returns tiktoken-style mergeable ranks: {bytes([b]): b for the 256 bytes} plus one entry per
    merge, ranked in the order learned. Stops early (fewer ranks) if no adjacent pair is left.

    Each step merges the pair with the highest count; ties go to the lexicographically smallest
    (left bytes, right bytes), so the result never depends on dict, set or hash order.

    Speed comes from two things. (1) Chunks are counted once: a chunk that occurs 10,000 times is
    one entry with weight 10,000. (2) Pair counts are updated incrementally: a merge touches only
    the chunks that contain the merged pair (found through `where`), and only their pairs' counts
    change. The best pair is taken from a max-heap with lazy deletion: each count change pushes a
    fresh entry, and a popped entry whose count is out of date is skipped.
    """
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (the single bytes), got {vocab_size}")
    chunk_counts = Counter(re.findall(pattern, text))
    chunks = sorted(chunk_counts)
    words: list[list[int]] = [list(chunk.encode("utf-8")) for chunk in chunks]  # token ids
    freqs: list[int] = [chunk_counts[chunk] for chunk in chunks]

    token_bytes: list[bytes] = [bytes([b]) for b in range(256)]  # id -> bytes
    ranks: dict[bytes, int] = {tb: i for i, tb in enumerate(token_bytes)}

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> chunks that (may) hold it
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freqs[i]
            where[pair].add(i)

    def heap_entry(pair: tuple[int, int]) -> tuple[int, bytes, bytes, int, int]:
        a, b = pair
        return (-pair_counts[pair], token_bytes[a], token_bytes[b], a, b)

    heap = [heap_entry(pair) for pair in pair_counts]
    heapq.heapify(heap)

    while len(token_bytes) < vocab_size and heap:
        neg_count, _, _, a, b = heapq.heappop(heap)
        if pair_counts.get((a, b), 0) != -neg_count:
            continue  # stale entry: this pair's count changed after it was pushed
        merged = token_bytes[a] + token_bytes[b]
        # Two different pairs can spell the same bytes ("a"+"bc" and "ab"+"c"); tiktoken looks
        # tokens up by bytes, so the second one reuses the first one's id instead of a new rank.
        new_id = ranks.get(merged)
        if new_id is None:
            new_id = len(token_bytes)
            token_bytes.append(merged)
            ranks[merged] = new_id

        for i in sorted(where.pop((a, b))):
            old_word = words[i]
            new_word = _merge_pair(old_word, a, b, new_id)
            if len(new_word) == len(old_word):
                continue  # `where` is a superset: this chunk lost the pair in an earlier merge
            words[i] = new_word
            old_pairs = Counter(zip(old_word, old_word[1:]))
            new_pairs = Counter(zip(new_word, new_word[1:]))
            for pair in old_pairs.keys() | new_pairs.keys():
                delta = (new_pairs[pair] - old_pairs[pair]) * freqs[i]
                if delta == 0:
                    continue
                pair_counts[pair] += delta
                if pair_counts[pair] == 0:
                    del pair_counts[pair]
                else:
                    heapq.heappush(heap, heap_entry(pair))
                if delta > 0:
                    where[pair].add(i)
    return ranks


def _merge_pair(word: list[int], a: int, b: int, new_id: int) -> list[int]:
    """Replace each non-overlapping occurrence of (a, b) in `word`, left to right, by new_id."""
    out = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


# ----------------------------------------------------------------------------------------------
# Saving and loading


def _ranks_to_text(ranks: dict[bytes, int]) -> str:
    """tiktoken's .tiktoken format: one `base64(token) rank` line per token, in rank order."""
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    return "".join(f"{base64.b64encode(token).decode('ascii')} {rank}\n" for token, rank in by_rank)


def save_bpe(ranks: dict[bytes, int], path: str | os.PathLike) -> None:
    """Write `ranks` to `path` atomically: a half-written vocabulary is never visible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(_ranks_to_text(ranks))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


_BPE_FIX = "Regenerate it (python -m minigpt_rlhf.world rebuilds data/tokenizer.bpe) or pass another --tokenizer"


def load_bpe(path: str | os.PathLike) -> dict[bytes, int]:
    """Read ranks written by `save_bpe` (or any .tiktoken file): one `base64token rank` line per token.
    A byte-order mark and blank lines are accepted; anything else that tiktoken would reject, or that would
    make a vocabulary with gaps, is an error naming the file and line."""
    path = Path(path)
    text = decode_text(read_bytes(path, "vocabulary file"), path, "ascii", _BPE_FIX)
    ranks: dict[bytes, int] = {}
    line_of_rank: dict[int, int] = {}
    line_of_token: dict[bytes, int] = {}
    for lineno, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        fields = line.split()
        try:
            token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
            if len(fields) != 2:
                raise ValueError
        except (ValueError, IndexError):  # binascii.Error is a ValueError
            raise DataError(f"{where}: expected 'base64token rank', got {line[:80]!r}. {_BPE_FIX}") from None
        if not token or rank < 0:
            raise DataError(f"{where}: {'an empty token' if not token else f'negative rank {rank}'}. {_BPE_FIX}")
        if token in line_of_token:
            raise DataError(f"{where}: token {token!r} is listed again (first on line {line_of_token[token]}). "
                            f"{_BPE_FIX}")
        if rank in line_of_rank:
            raise DataError(f"{where}: rank {rank} is given again (first on line {line_of_rank[rank]}). {_BPE_FIX}")
        ranks[token], line_of_token[token], line_of_rank[rank] = rank, lineno, lineno
    # n tokens must have ranks 0..n-1: a rank of n or more is wrong on its own line (and leaves a gap below it)
    too_big = [(line_of_rank[r], r) for r in line_of_rank if r >= len(ranks)]
    if too_big:
        lineno, rank = min(too_big)
        raise DataError(f"{path}:{lineno}: rank {rank} is out of range: the file's {len(ranks)} tokens need the ranks "
                        f"0..{len(ranks) - 1}, each once ({len(too_big)} out of range in all). {_BPE_FIX}")
    check_ranks(ranks, str(path))
    return ranks


def check_ranks(ranks: dict[bytes, int], source: str):
    """Ranks must be exactly 0..n-1 and include the 256 single bytes (byte-level BPE encodes any text)."""
    if not ranks:
        raise DataError(f"{source}: no tokens (the vocabulary is empty). {_BPE_FIX}")
    missing = sorted(set(range(len(ranks))) - set(ranks.values()))
    if missing:
        raise DataError(f"{source}: ranks must be 0..{len(ranks) - 1} without gaps, but rank {missing[0]} is "
                        f"missing ({len(missing)} in all). {_BPE_FIX}")
    missing_bytes = [b for b in range(256) if bytes([b]) not in ranks]
    if missing_bytes:
        raise DataError(f"{source}: single byte {bytes([missing_bytes[0]])!r} is not a token ({len(missing_bytes)} of "
                        f"the 256 are missing); a byte-level vocabulary needs all 256. {_BPE_FIX}")


# ----------------------------------------------------------------------------------------------
# GPT-2's vocabulary files


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (openai/gpt-2, src/encoder.py).

    GPT-2's vocab.bpe and encoder.json store tokens as text, so each byte is shown as a visible
    character: printable Latin-1 bytes stand for themselves, and the 68 others (control bytes,
    space, 0x7F-0xA0, 0xAD) are shifted to chr(256), chr(257), ... in byte order. That is why a
    leading space appears as "Ġ" (chr(256 + 32)) in GPT-2's vocabulary.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    n_shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n_shifted)
            n_shifted += 1
    return mapping


def load_gpt2_folder(folder: str | os.PathLike) -> dict[bytes, int]:
    """Mergeable ranks from GPT-2's `encoder.json` and `vocab.bpe` in `folder` (or the same two files under
    Hugging Face's names, `vocab.json` and `merges.txt`, as a GPT-2 folder from the Hub has them).

    encoder.json maps each token, spelled with `bytes_to_unicode`, to its id; those ids are the
    ranks. vocab.bpe lists the merges in priority order, and tiktoken needs rank order to be merge
    order, so we check that the i-th merge's result has id 256 + i. EOS must be the next id.
    """
    folder = Path(folder)
    encoder_path, merges_path = folder / "encoder.json", folder / "vocab.bpe"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: GPT-2 vocabulary folder not found. {_GPT2_HELP}")
    for p, hf_name in ((encoder_path, "vocab.json"), (merges_path, "merges.txt")):
        if not p.is_file() and not (folder / hf_name).is_file():
            raise FileNotFoundError(f"{p}: GPT-2 vocabulary file not found (nor {hf_name}). {_GPT2_HELP}")
    if not encoder_path.is_file():
        encoder_path = folder / "vocab.json"
    if not merges_path.is_file():
        merges_path = folder / "merges.txt"
    unicode_to_byte = {ch: b for b, ch in bytes_to_unicode().items()}

    def to_bytes(token: str, where) -> bytes:
        try:
            return bytes(unicode_to_byte[ch] for ch in token)
        except KeyError as e:
            raise DataError(f"{where}: token {token[:40]!r} holds {e.args[0]!r}, which is not one of GPT-2's 256 "
                            "byte characters (bytes_to_unicode): not a GPT-2 vocabulary file") from None

    encoder = parse_json(read_text(encoder_path, "GPT-2 encoder.json"), str(encoder_path))
    if not isinstance(encoder, dict) or any(type(i) is not int for i in encoder.values()):
        raise DataError(f"{encoder_path}: expected a JSON object mapping each token to its integer id "
                        f"(got {type(encoder).__name__}). Use encoder.json from the GPT-2 release")
    eos_id = encoder.pop(EOS, None)
    ranks = {to_bytes(token, encoder_path): i for token, i in encoder.items()}
    if len(set(ranks.values())) != len(ranks):
        raise DataError(f"{encoder_path}: two tokens share an id. Use encoder.json from the GPT-2 release")
    check_ranks(ranks, str(encoder_path))

    merge_lines = []  # (line number, left, right)
    for lineno, line in enumerate(split_lines(read_text(merges_path, "GPT-2 vocab.bpe")), 1):
        if not line.strip() or line.startswith("#version"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DataError(f"{merges_path}:{lineno}: expected a merge 'left right', got {line[:80]!r}")
        merge_lines.append((lineno, fields[0], fields[1]))
    for i, (lineno, left, right) in enumerate(merge_lines):
        if ranks.get(to_bytes(left + right, f"{merges_path}:{lineno}")) != 256 + i:
            raise DataError(f"{merges_path}:{lineno}: merge {i} ({left} {right}) does not have id {256 + i} "
                            f"in {encoder_path}; the two files do not belong together")
    if len(ranks) != 256 + len(merge_lines):
        raise DataError(f"{encoder_path} has {len(ranks)} byte-level tokens, expected 256 single "
                        f"bytes + {len(merge_lines)} merges from {merges_path}")
    if eos_id is not None and eos_id != len(ranks):
        raise DataError(f"{encoder_path}: {EOS} has id {eos_id}, expected {len(ranks)}")
    return ranks


_GPT2_HELP = (
    "To use GPT-2's vocabulary offline, put vocab.bpe and encoder.json from the GPT-2 release "
    "(openaipublic.blob.core.windows.net/gpt-2/encodings/main/, or the Hugging Face 'gpt2' repo) "
    "into a folder and pass 'gpt2:/that/folder', or set TIKTOKEN_CACHE_DIR to a tiktoken cache "
    "that already holds the gpt2 encoding."
)


# ----------------------------------------------------------------------------------------------
# The tokenizer


class Tokenizer:
    """Text <-> token ids: a tiktoken.Encoding built from mergeable ranks plus EOS and PAD.

    `encode` treats its input as plain text: a literal "<|endoftext|>" typed by a user is encoded
    as ordinary characters, so data can never smuggle in an EOS or PAD id. Callers append
    `eos_id` themselves. `decode` drops EOS and PAD ids, so a padded batch row decodes cleanly.
    """

    def __init__(self, name: str, ranks: dict[bytes, int], pattern: str):
        n_ranks = len(ranks)
        if sorted(ranks.values()) != list(range(n_ranks)):
            raise ValueError(f"tokenizer {name!r}: ranks must be exactly 0..{n_ranks - 1}")
        if any(bytes([b]) not in ranks for b in range(256)):
            raise ValueError(f"tokenizer {name!r}: all 256 single bytes must be tokens")
        self.name = name
        self.ranks = ranks
        self.pattern = pattern
        self.eos_id = n_ranks
        self.pad_id = n_ranks + 1
        self.n_vocab = n_ranks + 2
        self.encoding = tiktoken.Encoding(
            name,
            pat_str=pattern,
            mergeable_ranks=ranks,
            special_tokens={EOS: self.eos_id, PAD: self.pad_id},
            explicit_n_vocab=self.n_vocab,
        )
        self._sha256 = hashlib.sha256(_ranks_to_text(ranks).encode("ascii")).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        """ids: any iterable of ints (a list, or a tensor's .tolist()). EOS and PAD are dropped."""
        special = (self.eos_id, self.pad_id)
        return self.encoding.decode([int(i) for i in ids if int(i) not in special])

    def identity(self) -> dict:
        """What a checkpoint stores to prove which vocabulary its embeddings were trained with.

        sha256 is over the ranks in save_bpe's file format, so for our own vocabulary it equals
        the first 16 hex digits of `sha256sum data/tokenizer.bpe`.
        """
        return {"name": self.name, "n_vocab": self.n_vocab, "eos_id": self.eos_id,
                "pad_id": self.pad_id, "sha256": self._sha256}

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, n_vocab={self.n_vocab}, sha256={self._sha256!r})"


def get_tokenizer(spec: str = "default") -> Tokenizer:
    """Build a Tokenizer from a spec.

    "default"          -> data/tokenizer.bpe at the repo root (our own BPE)
    "path/to/x.bpe"    -> that vocabulary file (our own BPE)
    "gpt2"             -> GPT-2's vocabulary from tiktoken's cache
    "gpt2:/some/dir"   -> GPT-2's vocabulary from vocab.bpe + encoder.json in that folder
    """
    if spec == "default":
        if not DEFAULT_BPE_PATH.is_file():
            raise FileNotFoundError(f"{DEFAULT_BPE_PATH}: project vocabulary not found. "
                                    "Regenerate it with: python -m minigpt_rlhf.world")
        return Tokenizer("bpe", load_bpe(DEFAULT_BPE_PATH), SPLIT_PATTERN)
    if spec == "gpt2":
        return Tokenizer("gpt2", _tiktoken_gpt2_ranks(), GPT2_SPLIT_PATTERN)
    if spec.startswith("gpt2:"):
        return Tokenizer("gpt2", load_gpt2_folder(spec[len("gpt2:"):]), GPT2_SPLIT_PATTERN)
    if Path(spec).is_dir():
        raise DataError(f"--tokenizer={spec}: is a folder. Pass a .bpe file, or gpt2:{spec} for a folder "
                        "holding GPT-2's vocab.bpe and encoder.json")
    if spec.endswith(".bpe") or Path(spec).is_file():
        return Tokenizer("bpe", load_bpe(spec), SPLIT_PATTERN)
    raise DataError(f"--tokenizer={spec}: unknown tokenizer. Expected 'default', 'gpt2', "
                    "'gpt2:/folder' or a path to a .bpe file")


def _tiktoken_gpt2_ranks() -> dict[bytes, int]:
    """GPT-2's ranks from tiktoken. On a cache miss tiktoken downloads; offline, that fails."""
    try:
        enc = tiktoken.get_encoding("gpt2")
    except Exception as e:  # requests' ConnectionError, OSError, a hash mismatch, ...
        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or (
            "the default tiktoken cache")
        raise DataError(f"--tokenizer=gpt2: could not load tiktoken's gpt2 encoding from {cache} "
                        f"({type(e).__name__}: {e}). {_GPT2_HELP}") from e
    # Reading the private _mergeable_ranks is how tiktoken's README extends an encoding.
    return enc._mergeable_ranks


def check_tokenizer_matches(stored_identity: dict, tok: Tokenizer, where: str) -> None:
    """Raise if `tok` is not the tokenizer that `where` (e.g. a checkpoint) was trained with.

    Token ids are only meaningful for the vocabulary that produced them: a model loaded with a
    different tokenizer runs without error and produces nonsense, so we refuse early instead.
    """
    current = tok.identity()
    if not isinstance(stored_identity, dict):
        raise DataError(f"{where}: key 'tokenizer' should be the identity of a tokenizer (a dict), got "
                        f"{type(stored_identity).__name__}: the file is damaged or not a minigpt_rlhf checkpoint")
    if dict(stored_identity) != current:
        raise DataError(f"{where}: tokenizer mismatch: it was made with {dict(stored_identity)}, "
                        f"but the current tokenizer is {current}. Pass the --tokenizer it was trained with")


# ----------------------------------------------------------------------------------------------
# Training a vocabulary on your own text


def training_text(paths: list[str]) -> str:
    """The text a vocabulary is trained on: plain-text files as they are; from JSONL data files (the
    documented schemas) every prompt in the template the model sees, and every response, chosen, rejected
    and responses string. Files are joined by blank lines."""
    from .data import format_prompt, iter_jsonl

    parts = []
    for path in paths:
        if not str(path).endswith(".jsonl"):
            parts.append(Path(path).read_text(encoding="utf-8"))
            continue
        for _, obj in iter_jsonl(path):
            if isinstance(obj.get("prompt"), str):
                parts.append(format_prompt(obj["prompt"]))
            for key in ("response", "chosen", "rejected"):
                if isinstance(obj.get(key), str):
                    parts.append(obj[key])
            parts += [r for r in obj.get("responses", []) if isinstance(r, str)]
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> Tokenizer:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt_rlhf.tokenizer",
        description="Train the project's byte-level BPE on your own text; use it with --tokenizer=OUT.")
    parser.add_argument("files", nargs="+", help="text files (.txt as they are) and JSONL data files (.jsonl)")
    parser.add_argument("--out", required=True, help="where to write the vocabulary (.bpe)")
    parser.add_argument("--vocab_size", type=int, default=2048, help="tokens before EOS and PAD (at least 256)")
    args = parser.parse_args(argv)
    for path in args.files:
        if not Path(path).is_file():
            raise SystemExit(f"error: file {path} not found")
    ranks = train_bpe(training_text(args.files), args.vocab_size)
    if len(ranks) < args.vocab_size:
        print(f"the text has no more pairs to merge: {len(ranks)} tokens instead of {args.vocab_size}")
    save_bpe(ranks, args.out)
    tok = get_tokenizer(args.out)
    print(f"tokenizer: {len(ranks)} tokens -> {args.out} (sha256 {tok.identity()['sha256']}); "
          f"train with --tokenizer={args.out}")
    return tok


if __name__ == "__main__":
    main()
