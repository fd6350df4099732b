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

import json
from pathlib import Path

import numpy as np
import torch

PROMPT_TEMPLATE = "Instruction: {prompt}\nResponse:\n"


class DataError(ValueError):
    """A malformed data file: the message names the file and line."""


def format_prompt(prompt: str) -> str:
    return PROMPT_TEMPLATE.format(prompt=prompt)


def iter_jsonl(path: str | Path):
    """Yield ("file:line", object) for every non-blank line, with a clear error for a missing file, a line
    that is not JSON, or a line that is not a JSON object."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} not found")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, obj


def read_jsonl(path: str | Path, schema: dict[str, type]) -> list[dict]:
    """Read a JSONL file, checking that every line is a JSON object with the keys of `schema` of the
    right types (non-empty strings). Errors name the file and the line number."""
    rows = []
    for where, obj in iter_jsonl(path):
        for key, typ in schema.items():
            if key not in obj:
                raise DataError(f"{where}: missing key {key!r} (expected keys: {sorted(schema)})")
            if not isinstance(obj[key], typ):
                raise DataError(f"{where}: {key!r} should be {typ.__name__}, got {type(obj[key]).__name__}")
            if typ is str and not obj[key].strip():
                raise DataError(f"{where}: {key!r} is empty")
        obj["_where"] = where
        rows.append(obj)
    if not rows:
        raise DataError(f"{path}: no data lines")
    return rows


def read_sft(path) -> list[dict]:
    return read_jsonl(path, {"prompt": str, "response": str})


def read_prompts(path) -> list[dict]:
    return read_jsonl(path, {"prompt": str})


# ----------------------------------------------------------------------------------------------------
# Tokenized examples


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
        raise DataError(f"{source}: every prompt is longer than max_prompt_len={max_prompt_len} tokens")
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
            raise DataError(f"no SFT example fits the context (block_size={block_size})")
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
        if not path.exists():
            raise FileNotFoundError(f"corpus file {path} not found")
        docs = [d.strip() for d in path.read_text(encoding="utf-8").split("\n\n") if d.strip()]
        ids = []
        for d in docs:
            ids.extend(tok.encode(d))
            ids.append(tok.eos_id)
        self.tokens = np.array(ids, dtype=np.int64)
        self.path = path

    def __len__(self):
        return len(self.tokens)

    def batch(self, batch_size: int, block_size: int, rng: np.random.Generator):
        if len(self.tokens) <= block_size + 1:
            raise DataError(f"{self.path}: corpus ({len(self.tokens)} tokens) is shorter than one window")
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
