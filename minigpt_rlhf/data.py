"""Data files, the one prompt format, and batches.

JSONL schemas (one JSON object per line, UTF-8; extra keys are allowed and ignored):
  SFT demonstrations   {"prompt": str, "response": str}
  prompts (RM, PPO, eval) {"prompt": str}
  K-wise comparisons   {"prompt": str, "responses": [str, ...], "ranking": [int, ...]}  (best first)
  pairwise comparisons {"prompt": str, "chosen": str, "rejected": str}
`prompt` is the raw instruction; `format_prompt` wraps it in the template every stage uses, and every
response is followed by the EOS token.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

PROMPT_TEMPLATE = "Instruction: {prompt}\nResponse:\n"


class DataError(ValueError):
    """An input the user gave and can fix: a data file, a tokenizer file, a checkpoint, a resume state or an
    option. The message reads `<file>:<line or key>: <what is wrong>. <how to fix it>`; the scripts print it
    as one line, without a traceback (common.run_script)."""


def format_prompt(prompt: str) -> str:
    return PROMPT_TEMPLATE.format(prompt=prompt)


# ----------------------------------------------------------------------------------------------------
# Reading files: bytes, then text


def read_bytes(path: str | Path, what: str = "data file") -> bytes:
    """The bytes of a regular file, with a clear error for a missing file, a directory, a pipe or device (which
    could block forever) and a file that cannot be read."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a {what}. Pass the path of the file itself")
    if not path.is_file():
        raise DataError(f"{path}: is not a regular file (a pipe or a device?). Save the {what} to a file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: the {what} cannot be read ({e.strerror}). Check its permissions") from None


def decode_text(data: bytes, path: str | Path, encoding: str = "utf-8", fix: str = "Save it as UTF-8 text") -> str:
    """`data` as text in `encoding` (utf-8 or ascii). A leading UTF-8 byte-order mark is dropped (editors on
    Windows write one); compressed, UTF-16 and other undecodable bytes are errors naming the line and column."""
    if data.startswith(b"\x1f\x8b"):
        raise DataError(f"{path}: is gzip-compressed. Decompress it first (gunzip)")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(f"{path}: is UTF-16 (or UTF-32) text. {fix}")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    if b"\x00" in data:  # valid UTF-8, but no text file holds it: UTF-16 without a byte-order mark, or binary
        start = data.index(b"\x00")
        line = data.count(b"\n", 0, start) + 1
        raise DataError(f"{path}:{line}: holds a NUL byte (0x00), so it is UTF-16/UTF-32 or binary, not text. {fix}")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}: byte 0x{data[e.start]:02x} at column {column} is not "
                        f"{'ASCII' if encoding == 'ascii' else 'UTF-8'} ({e.reason}). {fix}") from None


def read_text(path: str | Path, what: str = "data file") -> str:
    """The text of a UTF-8 file (see read_bytes and decode_text for the errors)."""
    return decode_text(read_bytes(path, what), path)


def split_lines(text: str) -> list[str]:
    """Lines ended by \\n, \\r\\n or \\r, as Python's text files read them. (str.splitlines would also
    split at U+2028 and U+0085, which JSON allows unescaped inside a string.)"""
    return re.split(r"\r\n|\r|\n", text)


def parse_json(text: str, where: str):
    """json.loads with every way it can fail turned into a DataError naming `where` (file:line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno}). "
                        "Each line must hold one JSON object") from None
    except ValueError:  # an integer literal longer than Python's limit on int <-> str conversion
        raise DataError(f"{where}: a number with more than {sys.get_int_max_str_digits()} digits, which "
                        "Python's json refuses to read. Write it as a string or drop it") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply for Python's json to read. Flatten it") from None


def check_text(value: str, where: str, key: str):
    """A JSON string may hold an escaped lone surrogate ("\\ud800"), which is not text: it cannot be
    written back as UTF-8 or printed."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"{where}: {key!r} holds {value[e.start]!r}, half of a UTF-16 surrogate pair, which is "
                        "not a character. Fix the escape sequence") from None


def iter_jsonl(path: str | Path):
    """Yield ("file:line", object) for every non-blank line, with a clear error for a missing file, a line
    that is not JSON, or a line that is not a JSON object. A UTF-8 byte-order mark and CRLF line ends are
    accepted."""
    path = Path(path)
    for lineno, line in enumerate(split_lines(read_text(path)), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        obj = parse_json(line, where)
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}. "
                            "Each line must hold one JSON object")
        yield where, obj


def source_of(rows: list[dict]) -> str:
    """The file that rows read by read_jsonl or read_comparisons came from ("" for rows made in memory)."""
    where = rows[0].get("_where", "") if rows else ""
    return where.rsplit(":", 1)[0] if where else ""


def read_jsonl(path: str | Path, schema: dict[str, type]) -> list[dict]:
    """Read a JSONL file, checking that every line is a JSON object with the keys of `schema` of the
    right types (non-empty strings), and an optional "family" that is a string. Errors name the file and
    the line number."""
    rows = []
    for where, obj in iter_jsonl(path):
        for key, typ in schema.items():
            if key not in obj:
                raise DataError(f"{where}: missing key {key!r} (expected keys: {sorted(schema)})")
            if not isinstance(obj[key], typ):
                raise DataError(f"{where}: {key!r} should be {typ.__name__}, got {type(obj[key]).__name__}")
            if typ is str and not obj[key].strip():
                raise DataError(f"{where}: {key!r} is empty")
            if typ is str:
                check_text(obj[key], where, key)
        if "family" in obj and not isinstance(obj["family"], str):
            raise DataError(f"{where}: 'family' should be str, got {type(obj['family']).__name__}")
        obj["_where"] = where
        rows.append(obj)
    if not rows:
        raise DataError(f"{path}: no data lines. Add one JSON object per line")
    return rows


def read_sft(path) -> list[dict]:
    return read_jsonl(path, {"prompt": str, "response": str})


def read_prompts(path) -> list[dict]:
    return read_jsonl(path, {"prompt": str})


# ----------------------------------------------------------------------------------------------------
# Tokenized examples


def spread_subset(rows: list, n: int) -> list:
    """At most n rows taken at an even stride through the file, so that every task family of a file sorted by
    family is represented (n = 0: all of them)."""
    if not n:
        return rows
    return rows[:: max(1, len(rows) // n)][:n]


def encode_prompt(tok, prompt: str) -> list[int]:
    return tok.encode(format_prompt(prompt))


def encode_sft_example(tok, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response + EOS, and a loss mask that is 1 on the response tokens and EOS only
    (the model is trained to write the answer, not to predict the instruction)."""
    p = encode_prompt(tok, prompt)
    r = tok.encode(response) + [tok.eos_id]
    return p + r, [0] * len(p) + [1] * len(r)


def encode_prompts(tok, rows: list[dict], max_prompt_len: int, source: str = "") -> tuple[list, int]:
    """Encode prompts, skipping (and counting) those longer than max_prompt_len tokens."""
    kept, skipped = [], 0
    for row in rows:
        ids = encode_prompt(tok, row["prompt"])
        if len(ids) > max_prompt_len:
            skipped += 1
            continue
        kept.append({**row, "ids": ids})
    if not kept:
        raise DataError(f"{source or source_of(rows)}: every prompt is longer than max_prompt_len={max_prompt_len} "
                        "tokens. Raise --max_prompt_len or add shorter prompts")
    return kept, skipped


class SFTData:
    """SFT examples as token ids + loss masks; batches are right-padded (B, T) tensors.

    Examples longer than block_size + 1 tokens are skipped and counted (`self.skipped`)."""

    def __init__(self, tok, rows: list[dict], block_size: int):
        self.examples, self.skipped = [], 0
        for row in rows:
            ids, mask = encode_sft_example(tok, row["prompt"], row["response"])
            if len(ids) > block_size + 1:
                self.skipped += 1
                continue
            self.examples.append((ids, mask))
        if not self.examples:
            raise DataError(f"{source_of(rows) or 'SFT data'}: no SFT example fits the context (block_size="
                            f"{block_size} tokens: prompt + response + EOS must be at most {block_size + 1}). "
                            "Shorten the examples or raise --block_size")
        self.pad_id = tok.pad_id

    def __len__(self):
        return len(self.examples)

    def n_loss_tokens(self, indices) -> int:
        """How many target tokens of these examples carry loss (response tokens and EOS)."""
        return sum(sum(self.examples[i][1][1:]) for i in indices)

    def lengths(self) -> np.ndarray:
        """Input length of each example (its tokens minus one: the last token is only a target). (N,)"""
        return np.array([len(ids) - 1 for ids, _ in self.examples])

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """inputs (B, T), targets (B, T), loss_mask (B, T): targets[t] = ids[t + 1]."""
        seqs = [self.examples[i] for i in indices]
        T = max(len(ids) for ids, _ in seqs) - 1
        x = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        y = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        m = torch.zeros((len(seqs), T), dtype=torch.float32)
        for i, (ids, mask) in enumerate(seqs):
            n = len(ids) - 1
            x[i, :n] = torch.tensor(ids[:-1])
            y[i, :n] = torch.tensor(ids[1:])
            m[i, :n] = torch.tensor(mask[1:], dtype=torch.float32)
        return x, y, m


def length_grouped_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                         mega_batches: int = 50) -> np.ndarray:
    """One epoch's order of the examples in which each run of batch_size consecutive indices has similar
    lengths, so that a right-padded batch wastes little compute on padding.

    Like `group_by_length` in Hugging Face's Trainer: shuffle, cut into mega-batches of mega_batches x
    batch_size examples, sort each mega-batch by length (longest first), cut it into batches, and shuffle
    the order of all the batches. Every example appears once; which examples share a batch is still random
    apart from their length. A permutation of range(len(lengths)).
    """
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))  # (N,)
    mega = batch_size * mega_batches
    batches = []
    for m in range(0, len(order), mega):
        chunk = order[m: m + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size)]
    # full batches in random order; a short remainder batch (if any) goes last so that every full-size
    # slice of the order is one batch
    full = [b for b in batches if len(b) == batch_size]
    rest = [b for b in batches if len(b) != batch_size]
    return np.concatenate([full[i] for i in rng.permutation(len(full))] + rest) if batches else order


class TokenStream:
    """A pretraining corpus as one long token stream (documents separated by EOS), sampled in random
    windows of block_size + 1 tokens, as nanoGPT does."""

    def __init__(self, tok, path: str | Path):
        path = Path(path)
        text = "\n".join(split_lines(read_text(path, "corpus file")))  # CRLF: documents still part at blank lines
        docs = [d.strip() for d in text.split("\n\n") if d.strip()]
        ids = []
        for d in docs:
            ids.extend(tok.encode(d))
            ids.append(tok.eos_id)
        self.tokens = np.array(ids, dtype=np.int64)
        self.path = path

    def __len__(self):
        return len(self.tokens)

    def require_windows(self, block_size: int):
        """Raise unless the corpus holds a window of block_size + 1 tokens to train or evaluate on (with none,
        the loss of "zero windows" would be reported as 0)."""
        if len(self.tokens) <= block_size + 1:
            raise DataError(f"{self.path}: {len(self.tokens)} tokens, too short for one window of the context "
                            f"(block_size + 2 = {block_size + 2} tokens are needed). Add text or lower --block_size")

    def batch(self, batch_size: int, block_size: int, rng: np.random.Generator):
        self.require_windows(block_size)
        starts = rng.integers(0, len(self.tokens) - block_size - 1, size=batch_size)
        x = np.stack([self.tokens[s: s + block_size] for s in starts])
        y = np.stack([self.tokens[s + 1: s + 1 + block_size] for s in starts])
        return torch.from_numpy(x), torch.from_numpy(y)

    def eval_batches(self, batch_size: int, block_size: int, max_batches: int):
        """Consecutive non-overlapping windows from the start: a deterministic evaluation set."""
        n = min(max_batches * batch_size, (len(self.tokens) - 1) // block_size)
        for b in range(0, n, batch_size):
            idx = range(b, min(b + batch_size, n))
            x = np.stack([self.tokens[i * block_size: (i + 1) * block_size] for i in idx])
            y = np.stack([self.tokens[i * block_size + 1: (i + 1) * block_size + 1] for i in idx])
            yield torch.from_numpy(x), torch.from_numpy(y)


def few_shot_prompt(tok, prompt: str, demos: list[dict], max_tokens: int) -> list[int]:
    """The prompt of the base model compared against in the final report, our stand-in for InstructGPT's
    "GPT-3 (prompted)" baseline (Ouyang et al. 2022, fig. 1): demonstrations in the one prompt format, each
    followed by its response and EOS (the pretraining corpus separates documents with EOS), then the prompt
    in the same format. Takes demos in order while the whole fits in max_tokens; the prompt alone if none fits."""
    ids = encode_prompt(tok, prompt)
    shots = []
    for d in demos:
        shot = encode_prompt(tok, d["prompt"]) + tok.encode(d["response"]) + [tok.eos_id]
        if len(shots) + len(shot) + len(ids) <= max_tokens:
            shots += shot
    return shots + ids


def few_shot_demos(demos: list[dict], n: int, seed: int) -> list[dict]:
    """n demonstrations for few-shot prompts: a seeded random draw of 4n, the n shortest of them (short
    shots leave room in a small context)."""
    rng = np.random.default_rng(seed)
    pool = [demos[i] for i in rng.permutation(len(demos))[: 4 * n]]
    return sorted(pool, key=lambda d: len(d["prompt"]) + len(d["response"]))[:n]


def data_file(config, option: str, filename: str, needed_for: str = "") -> str | None:
    """Where a documented data file is: the --{option}=PATH given, else {data_dir}/{filename}.

    needed_for says why this run needs the file (e.g. "pretraining"): then a missing file is an error that
    names the option. Without it the file is optional: None if it is not there (an explicitly given path
    must still exist)."""
    given = getattr(config, option)
    path = given or str(Path(config.data_dir) / filename)
    if Path(path).is_file():
        return path
    if given or needed_for:
        why = f" ({needed_for} needs it)" if needed_for else ""
        raise FileNotFoundError(f"--{option}: data file {path} not found{why}; pass --{option}=FILE or put "
                                f"{filename} in --data_dir={config.data_dir}")
    return None
