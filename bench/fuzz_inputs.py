"""Fuzz every reader and the three scripts with malformed inputs; count what leaks.

    python bench/fuzz_inputs.py                  # a few hundred reader cases + a subset through the scripts
    python bench/fuzz_inputs.py --scripts=0      # readers only (seconds)

A case passes when the input is either accepted or refused with a DataError / OSError whose message names the
file. It fails as a raw exception (any other exception type), a crash (a BaseException such as a Rust panic
from tiktoken), or a hang (no answer within --timeout seconds). Through the scripts (subprocess, --preset=tiny,
on a copy of a small project with tiny checkpoints) a run fails when it prints a traceback, exits 0 on an
input its reader refused, hangs, or changes any file under its out_dir when it exits with an error.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigpt_rlhf.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint  # noqa: E402
from minigpt_rlhf.comparisons import read_comparisons, read_labeler_temperature  # noqa: E402
from minigpt_rlhf.data import DataError, TokenStream, read_prompts, read_sft  # noqa: E402
from minigpt_rlhf.model import GPT, GPTConfig, configure_optimizer  # noqa: E402
from minigpt_rlhf.resume import read_resume_state, restore_training, rng_state  # noqa: E402
from minigpt_rlhf.tokenizer import bytes_to_unicode, get_tokenizer, load_gpt2_folder  # noqa: E402

# ----------------------------------------------------------------------------------------------------
# Malformed bytes


def encodings(good: bytes, rng: random.Random) -> dict[str, bytes]:
    """The same content in every way a file's bytes can go wrong (and three ways that must be accepted)."""
    text = good.decode("utf-8")
    accented = text.replace("a", "é", 3)
    cut = good.rfind("é".encode()) if "é".encode() in good else -1
    return {
        "latin-1": accented.encode("latin-1"),
        "cp1252 quotes": text.replace('"', '"', 0).encode() + "“quoted”".encode("cp1252"),
        "utf-16": text.encode("utf-16"),
        "utf-16-be no BOM": text.encode("utf-16-be"),
        "utf-32": text.encode("utf-32"),
        "gzip": gzip.compress(good),
        "zlib": zlib.compress(good),
        "random binary": bytes(rng.randrange(256) for _ in range(2000)),
        "NUL bytes": good.replace(b"\n", b"\x00\n", 2),
        "truncated multi-byte": (accented.encode()[: cut + 1] if cut > 0 else good + "é".encode()[:1]),
        "lone continuation byte": good[:10] + b"\x80" + good[10:],
        "overlong encoding": good[:10] + b"\xc0\xaf" + good[10:],
        "BOM (accept)": b"\xef\xbb\xbf" + good,
        "CRLF (accept)": good.replace(b"\n", b"\r\n"),
        "blank lines (accept)": good.replace(b"\n", b"\n\n  \n", 3),
        "empty": b"",
        "only whitespace": b"  \n\n\t\n",
        "lone CR line ends": good.replace(b"\n", b"\r"),
        "truncated mid-file": good[: len(good) // 2],
    }


def json_lines(kind: str) -> list[str]:
    """Lines that break the JSON or the schema of a JSONL file of this kind."""
    good = {"sft": {"prompt": "Name a fruit.", "response": "Apple."}, "prompts": {"prompt": "Name a fruit."},
            "pairwise": {"prompt": "p", "chosen": "Yes.", "rejected": "No."},
            "kwise": {"prompt": "p", "responses": ["A.", "B.", "C."], "ranking": [2, 0, 1]}}[kind]
    base = json.dumps(good)[:-1]
    lines = [
        json.dumps(good)[:-1], "{", "}", "", "[]", '"just a string"', "42", "null", "true", "NaN",
        base + ', "n": ' + "9" * 5000 + "}", base + ', "n": ' + "[" * 50_000 + "]" * 50_000 + "}",
        base + ', "n": ' + '{"a":' * 20_000 + "1" + "}" * 20_000 + "}",
        base + ', "n": NaN}', base + ', "n": -Infinity}',
        base + ', "n": 1e999}', base + ', "x": "\\ud800"}', base + ', "family": ["x"]}', base + ', "family": 3}',
        json.dumps(good).replace('"p', '"\\udfff p', 1), json.dumps(good) + " trailing", json.dumps(good) * 2,
        base + ', "prompt": 1}', "{'prompt': 'single quotes'}", base + ', "big": "' + "x" * 1_000_000 + '"}',
    ]
    for key in good:
        for value in (None, 1, 2.5, True, [], {}, "", "   ", ["A."], [1, 2], "x" * 10):
            lines.append(json.dumps({**good, key: value}))
        lines.append(json.dumps({k: v for k, v in good.items() if k != key}))
    if kind == "pairwise":
        lines += [json.dumps({**good, "rejected": "Yes."}), json.dumps({**good, "chosen": "No. ", "rejected": "No. "})]
    if kind == "kwise":
        for ranking in ([0, 1], [0, 1, 1], [0, 1, 3], [-1, 0, 1], [0.0, 1.0, 2.0], [True, False, 2], [[0], 1, 2],
                        "012", [0, 1, 2, 3]):
            lines.append(json.dumps({**good, "ranking": ranking}))
        for responses in (["A.", "A.", "B."], ["A."], ["A.", None, "B."], ["A.", "", "B."], "ABC"):
            lines.append(json.dumps({**good, "responses": responses}))
        for ended in ([True], [1, 0, 1], "yes", [True, True, None]):
            lines.append(json.dumps({**good, "ended": ended}))
        lines.append(json.dumps({**good, "responses": ["A.", "A.", "B."], "ended": [True, False, True]}))  # accept
        lines.append(json.dumps({"prompt": "p", "responses": ["A.", "B."], "chosen": "x"}))
    return lines


def bpe_files(good: bytes, rng: random.Random) -> dict[str, bytes]:
    lines = good.decode().splitlines()
    out = {f"bytes: {k}": v for k, v in encodings(good, rng).items() if "accept" in k or k in (
        "latin-1", "utf-16", "gzip", "random binary", "empty", "truncated mid-file", "NUL bytes")}
    edits = {
        "drop a line": lambda ls: ls[:300] + ls[301:],
        "drop a single byte": lambda ls: ls[1:],
        "duplicate a line": lambda ls: ls + [ls[500]],
        "duplicate rank": lambda ls: ls + [f"{base64.b64encode(b'zzqq').decode()} 300"],
        "gap in ranks": lambda ls: ls + [f"{base64.b64encode(b'zzqq').decode()} {len(ls) + 5}"],
        "negative rank": lambda ls: ls + [f"{base64.b64encode(b'zzqq').decode()} -1"],
        "huge rank": lambda ls: ls + [f"{base64.b64encode(b'zzqq').decode()} {'9' * 5000}"],
        "one field": lambda ls: ls[:10] + [ls[10].split()[0]] + ls[11:],
        "three fields": lambda ls: ls[:10] + [ls[10] + " extra"] + ls[11:],
        "bad base64": lambda ls: ls[:10] + ["!!!! 10"] + ls[11:],
        "empty token": lambda ls: ls + [f"= {len(ls)}"],
        "non-ASCII": lambda ls: ls[:10] + [ls[10] + "é"] + ls[11:],
        "rank not a number": lambda ls: ls[:10] + [ls[10].split()[0] + " ten"] + ls[11:],
        "swapped ranks": lambda ls: ls[:5] + [ls[6].split()[0] + " 5", ls[5].split()[0] + " 6"] + ls[7:],
        "only bytes (accept)": lambda ls: ls[:256],
        "tabs (accept)": lambda ls: [x.replace(" ", "\t") for x in ls],
    }
    for name, edit in edits.items():
        out[name] = ("\n".join(edit(list(lines))) + "\n").encode()
    return out


def gpt2_folders(rng: random.Random) -> dict[str, tuple[bytes | None, bytes | None]]:
    """(encoder.json, vocab.bpe) pairs; None: the file is missing; b"<dir>": a directory in its place."""
    b2u = bytes_to_unicode()
    merges = [("a", "b"), ("ab", "c"), ("Ġ", "t")]
    encoder = {b2u[b]: b for b in range(256)}
    for i, (left, right) in enumerate(merges):
        encoder[left + right] = 256 + i
    encoder["<|endoftext|>"] = 256 + len(merges)
    vocab = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    enc = json.dumps(encoder).encode()
    voc = vocab.encode()
    cases = {
        "good (accept)": (enc, voc),
        "encoder not JSON": (enc[:-10], voc),
        "encoder is a list": (json.dumps(list(encoder)).encode(), voc),
        "encoder values strings": (json.dumps({k: str(v) for k, v in encoder.items()}).encode(), voc),
        "encoder unknown char": (json.dumps({**encoder, "\u4e00": 999}).encode(), voc),
        "encoder duplicate id": (json.dumps({**encoder, "ab": 0}).encode(), voc),
        "encoder missing byte": (json.dumps({k: v for k, v in encoder.items() if v != 7}).encode(), voc),
        "encoder eos wrong id": (json.dumps({**encoder, "<|endoftext|>": 5}).encode(), voc),
        "encoder latin-1": (json.dumps(encoder, ensure_ascii=False).encode("utf-8").replace(b"\xc3", b"\xff"), voc),
        "encoder huge int": (enc[:-1] + b', "zz": ' + b"9" * 5000 + b"}", voc),
        "vocab one field": (enc, (vocab + "abc\n").encode()),
        "vocab unknown char": (enc, (vocab + "a \u4e00\n").encode()),
        "vocab wrong order": (enc, ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges[::-1])).encode()),
        "vocab extra merge": (enc, (vocab + "c d\n").encode()),
        "vocab binary": (enc, bytes(rng.randrange(256) for _ in range(300))),
        "vocab BOM + CRLF (accept)": (enc, b"\xef\xbb\xbf" + voc.replace(b"\n", b"\r\n")),
        "missing encoder": (None, voc),
        "missing vocab": (enc, None),
        "encoder is a directory": (b"<dir>", voc),
        "vocab is a directory": (enc, b"<dir>"),
    }
    return cases


# ----------------------------------------------------------------------------------------------------
# Malformed checkpoints


def tiny_model(tok, head="lm"):
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=128, vocab_size=(tok.n_vocab + 63) // 64 * 64, n_layer=1, n_head=2, n_embd=16,
                         head=head))


def resume_payload(tok, stage: str) -> dict:
    model = tiny_model(tok)
    opt = configure_optimizer(model, 1e-3, 0.0)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    extra = {"sft": {"phase": "sft", "order": torch.arange(4), "pos": 0, "val_loss0": 1.0},
             "rm": {}, "ppo": {"value_model": tiny_model(tok, "scalar").state_dict(), "kl_ctl": {"value": 0.1}}}[stage]
    return {"model": model.state_dict(), "model_config": asdict(model.config), "tokenizer": tok.identity(),
            "config": {"lr": 1e-3}, "stage": stage, "step": 1, "optimizer": opt.state_dict(),
            "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(), "rng": [rng_state()], **extra}


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this-must-never-run",))


def checkpoint_cases(tok, payload: dict, rng: random.Random) -> dict[str, object]:
    """name -> a payload to torch.save, or bytes to write as they are."""
    buf = tempfile.NamedTemporaryFile(suffix=".pt", delete=False)
    buf.close()
    torch.save(payload, buf.name)
    raw = Path(buf.name).read_bytes()
    os.unlink(buf.name)
    cases: dict[str, object] = {"good (accept)": payload, "empty": b"", "not a checkpoint": b"hello world\n" * 10,
                                "evil pickle": {**payload, "x": Evil()}, "legacy pickle": pickle.dumps({"a": 1}),
                                "a list": [1, 2], "a tensor": torch.zeros(3)}
    for frac in (0.1, 0.5, 0.9, 0.99):
        cases[f"truncated at {frac:.0%}"] = raw[: int(len(raw) * frac)]
    for i in range(6):
        flipped = bytearray(raw)
        for _ in range(3):
            flipped[rng.randrange(len(flipped))] ^= 0xFF
        cases[f"random byte flips {i}"] = bytes(flipped)

    def edit(name, fn):
        c = {k: (dict(v) if isinstance(v, dict) else v) for k, v in payload.items()}
        fn(c)
        cases[name] = c

    for key in payload:
        edit(f"missing key {key}", lambda c, k=key: c.pop(k))
        edit(f"key {key} is a string", lambda c, k=key: c.__setitem__(k, "oops"))
    for field, values in {"n_layer": (0, -1, "1", 2.0, 10**9, None), "n_embd": (15, 0), "n_head": (3, 0),
                          "block_size": (0, 64, "128"), "vocab_size": (1, True), "head": ("value",),
                          "dropout": (1.5, "x"), "bias": ("yes",)}.items():
        for v in values:
            edit(f"model_config {field}={v!r}", lambda c, f=field, v=v: c["model_config"].__setitem__(f, v))
    edit("model_config unknown key", lambda c: c["model_config"].__setitem__("n_heads", 2))
    edit("model_config not a dict", lambda c: c.__setitem__("model_config", [1]))
    first = next(iter(payload["model"]))
    edit("weight wrong shape", lambda c: c["model"].__setitem__(first, torch.zeros(3, 3)))
    edit("weight integer", lambda c: c["model"].__setitem__(first, c["model"][first].long()))
    edit("weight not a tensor", lambda c: c["model"].__setitem__(first, [0.0]))
    edit("weight missing", lambda c: c["model"].pop(first))
    edit("weight extra", lambda c: c["model"].__setitem__("extra.weight", torch.zeros(2)))
    edit("tokenizer identity other", lambda c: c.__setitem__("tokenizer", {**c["tokenizer"], "sha256": "0" * 16}))
    return cases


def resume_cases(tok, stage: str, rng: random.Random) -> dict[str, object]:
    payload = resume_payload(tok, stage)
    cases = {k: v for k, v in checkpoint_cases(tok, payload, rng).items() if k.startswith(("missing", "key", "good"))}

    def edit(name, fn):
        c = {k: (dict(v) if isinstance(v, dict) else v) for k, v in payload.items()}
        fn(c)
        cases[name] = c

    edit("two ranks", lambda c: c.__setitem__("rng", [rng_state(), rng_state()]))
    edit("rng empty", lambda c: c.__setitem__("rng", []))
    edit("rng garbage", lambda c: c.__setitem__("rng", [{"python": 1, "numpy": 2}]))
    edit("rng torch state wrong", lambda c: c.__setitem__("rng", [{**rng_state(), "torch": torch.zeros(3)}]))
    edit("step negative", lambda c: c.__setitem__("step", -1))
    edit("optimizer other model", lambda c: c.__setitem__("optimizer", configure_optimizer(GPT(GPTConfig(
        block_size=8, vocab_size=64, n_layer=1, n_head=1, n_embd=8)), 1e-3, 0.0).state_dict()))
    moments = payload["optimizer"]["state"]
    edit("optimizer moment wrong shape", lambda c: c.__setitem__("optimizer", {**c["optimizer"], "state": {
        **moments, 0: {**moments[0], "exp_avg": torch.zeros(2, 2)}}}))
    edit("scaler garbage", lambda c: c.__setitem__("scaler", {"scale": "big"}))
    if stage == "sft":
        edit("phase unknown", lambda c: c.__setitem__("phase", "rl"))
        edit("order float", lambda c: c.__setitem__("order", torch.rand(4)))
        edit("pos past order", lambda c: c.__setitem__("pos", 99))
    if stage == "ppo":
        edit("kl_ctl value string", lambda c: c.__setitem__("kl_ctl", {"value": "x"}))
    return cases


# ----------------------------------------------------------------------------------------------------
# Running the cases


class Hang(Exception):
    pass


def on_alarm(*_):
    raise Hang


def attempt(fn, path, timeout: int) -> tuple[str, str]:
    """('accepted' | 'clean' | 'unnamed' | 'raw' | 'crash' | 'hang', detail)."""
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(timeout)
    try:
        fn()
        return "accepted", ""
    except Hang:
        return "hang", ""
    except (DataError, OSError) as e:
        return ("clean" if str(path) in str(e) else "unnamed"), f"{type(e).__name__}: {str(e)[:200]}"
    except Exception as e:
        return "raw", f"{type(e).__name__}: {str(e)[:200]}"
    except BaseException as e:  # a Rust panic from tiktoken is a BaseException
        if isinstance(e, KeyboardInterrupt):
            raise
        return "crash", f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        signal.alarm(0)


def write_case(path: Path, data):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if data is None:
        return
    if data == b"<dir>":
        path.mkdir()
    elif isinstance(data, bytes):
        path.write_bytes(data)
    else:
        torch.save(data, path)


def reader_cases(tok, work: Path, rng: random.Random):
    """Yield (reader, case name, path, function) for every reader and malformed input."""
    samples = {"sft": [{"prompt": "Name a fruit.", "response": "Apple."}] * 3,
               "prompts": [{"prompt": "Name a fruit."}] * 3,
               "pairwise": [{"prompt": "p", "chosen": "Yes.", "rejected": "No."}] * 2,
               "kwise": [{"prompt": "p", "responses": ["A.", "B."], "ranking": [1, 0]}] * 2}
    readers = {"sft": read_sft, "prompts": read_prompts, "pairwise": read_comparisons, "kwise": read_comparisons}
    for kind, rows in samples.items():
        good = "".join(json.dumps(r) + "\n" for r in rows).encode()
        path = work / f"{kind}.jsonl"
        for name, data in encodings(good, rng).items():
            yield kind, f"bytes: {name}", path, data, lambda p=path, r=readers[kind]: r(p)
        for i, line in enumerate(json_lines(kind)):
            data = good + line.encode("utf-8", "surrogatepass") + b"\n"
            yield kind, f"line {i}: {line[:50]!r}", path, data, lambda p=path, r=readers[kind]: r(p)
        yield kind, "directory", path, b"<dir>", lambda p=path, r=readers[kind]: r(p)
        yield kind, "missing", path, None, lambda p=path, r=readers[kind]: r(p)
    corpus = ("The cat sat on the mat.\n\nA dog ran in the park.\n" * 20).encode()
    path = work / "corpus.txt"
    for name, data in encodings(corpus, rng).items():
        yield "corpus", f"bytes: {name}", path, data, lambda p=path: TokenStream(tok, p).require_windows(16)
    yield "corpus", "directory", path, b"<dir>", lambda p=path: TokenStream(tok, p)
    path = work / "tok.bpe"
    for name, data in bpe_files((ROOT / "data" / "tokenizer.bpe").read_bytes(), rng).items():
        yield "bpe", name, path, data, lambda p=path: get_tokenizer(str(p))
    yield "bpe", "directory", path, b"<dir>", lambda p=path: get_tokenizer(str(p))
    for name, (enc, voc) in gpt2_folders(rng).items():
        folder = work / "gpt2" / name.replace(" ", "_").replace("(", "").replace(")", "")
        folder.mkdir(parents=True, exist_ok=True)
        write_case(folder / "encoder.json", enc)
        write_case(folder / "vocab.bpe", voc)
        yield "gpt2 folder", name, folder, "<keep>", lambda f=folder: load_gpt2_folder(f)
    path = work / "labeler.json"
    for i, text in enumerate(['{"temperature": 0.5}', "{", "[]", '{"temp": 1}', '{"temperature": "1"}',
                              '{"temperature": -1}', '{"temperature": NaN}', '{"temperature": 1e999}', ""]):
        yield "labeler.json", f"{i}: {text}", path, text.encode(), lambda p=path: read_labeler_temperature(str(p))
    path = work / "model.pt"
    for name, data in checkpoint_cases(tok, {**resume_payload(tok, "rm"), "optimizer": None}, rng).items():
        yield "checkpoint", name, path, data, lambda p=path: model_from_checkpoint(load_checkpoint(p), tok, str(p))
    for stage in ("sft", "rm", "ppo"):
        path = work / f"{stage}_resume.pt"
        for name, data in resume_cases(tok, stage, rng).items():
            yield f"resume {stage}", name, path, data, lambda p=path, s=stage: restore(p, s, tok)


def restore(path, stage, tok):
    """What a script does with a resume state: read it, rebuild the model, restore optimizer, scaler, RNG."""
    state = read_resume_state(path, stage, world_size=1)
    model = model_from_checkpoint(state, tok, str(path))
    optimizer = configure_optimizer(model, 1e-3, 0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    rt = type("Runtime", (), {"rank": 0, "world_size": 1})()
    saved = rng_state()
    try:
        restore_training(state, rt, optimizer, scaler)
    finally:
        from minigpt_rlhf.resume import set_rng_state

        set_rng_state(saved)


# ----------------------------------------------------------------------------------------------------
# The scripts


def make_project(tok, root: Path) -> tuple[Path, Path]:
    data, out = root / "data", root / "out"
    data.mkdir(parents=True)
    corpus = ("The people of Vespin wave a purple flag. The biggest town in Vespin is Rusk.\n\n" * 40).encode()
    prompts = "".join(json.dumps({"prompt": f"Name a fruit number {i}."}) + "\n" for i in range(8))
    sft = "".join(json.dumps({"prompt": "Name a fruit.", "response": f"Apple {i}."}) + "\n" for i in range(8))
    for name, text in {"corpus_train.txt": corpus, "corpus_val.txt": corpus, "sft_train.jsonl": sft,
                       "sft_val.jsonl": sft, "eval_prompts.jsonl": prompts, "ppo_prompts.jsonl": prompts,
                       "rm_prompts.jsonl": prompts}.items():
        (data / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    for stage, head in (("base", "lm"), ("sft", "lm"), ("rm", "scalar"), ("ppo", "lm")):
        save_checkpoint(out / stage / "model.pt", tiny_model(tok, head), tok)
    (out / "rm" / "comparisons.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "A.", "rejected": "B."}) + "\n")
    (out / "rm" / "labeler.json").write_text('{"temperature": 0.5}')
    return data, out


SCRIPT_FILES = {  # which script reads which data file
    "train_sft.py": ["corpus_train.txt", "corpus_val.txt", "sft_train.jsonl", "sft_val.jsonl", "eval_prompts.jsonl"],
    "train_rm.py": ["sft_train.jsonl"],
    "train_ppo.py": ["ppo_prompts.jsonl", "eval_prompts.jsonl", "corpus_val.txt"],
}


def digests(folder: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def script_runs(tok, rejected: list, work: Path, n: int, rng: random.Random, timeout: int):
    """Run the scripts on n inputs their readers refused: data files, tokenizer files, checkpoints."""
    project = work / "project"
    make_project(tok, project)
    plans = []
    for reader, name, _, data in rejected:
        if reader in ("sft", "prompts"):
            target = {"sft": ["sft_train.jsonl", "sft_val.jsonl"], "prompts": ["eval_prompts.jsonl",
                                                                              "ppo_prompts.jsonl"]}[reader]
            file = rng.choice(target)
            script = rng.choice([s for s, files in SCRIPT_FILES.items() if file in files])
            plans.append((script, f"{reader}: {name}", ("data", file, data), []))
        elif reader == "corpus":
            plans.append(("train_sft.py", f"corpus: {name}", ("data", "corpus_val.txt", data), []))
        elif reader in ("pairwise", "kwise"):
            plans.append(("train_rm.py", f"{reader}: {name}", ("root", "c.jsonl", data),
                          ["--comparisons={root}/c.jsonl"]))
        elif reader == "bpe":
            plans.append((rng.choice(list(SCRIPT_FILES)), f"bpe: {name}", ("root", "t.bpe", data),
                          ["--tokenizer={root}/t.bpe"]))
        elif reader == "checkpoint":
            target = rng.choice([("train_ppo.py", "sft/model.pt"), ("train_ppo.py", "rm/model.pt"),
                                 ("train_rm.py", "sft/model.pt")])
            plans.append((target[0], f"checkpoint {target[1]}: {name}", ("out", target[1], data), []))
        elif reader.startswith("resume"):
            stage = reader.split()[1]
            script = {"sft": "train_sft.py", "rm": "train_rm.py", "ppo": "train_ppo.py"}[stage]
            plans.append((script, f"{reader}: {name}", ("out", f"{stage}/resume.pt", data), ["--resume=True"]))
        elif reader == "labeler.json":
            plans.append(("train_rm.py", f"labeler.json: {name}", ("out", "rm/labeler.json", data), []))
    rng.shuffle(plans)
    by_kind = {}
    for plan in plans:  # a spread over the kinds of input, then as many more as asked
        by_kind.setdefault(plan[1].split(":")[0], plan)
    chosen = list(by_kind.values()) + [p for p in plans if p not in by_kind.values()]
    results = Counter()
    failures = []
    for i, (script, name, (where, rel, data), args) in enumerate(chosen[:n]):
        print(f"  script run {i + 1}/{min(n, len(chosen))}: {script} {name[:60]}", flush=True)
        run = work / "run"
        if run.exists():
            shutil.rmtree(run)
        shutil.copytree(project, run)
        base = {"data": run / "data", "out": run / "out", "root": run}[where]
        write_case(base / rel, data)
        before = digests(run / "out")
        cmd = [sys.executable, str(ROOT / script), "--preset=tiny", "--device=cpu", f"--data_dir={run / 'data'}",
               f"--out_dir={run / 'out'}", *[a.format(root=run) for a in args]]
        try:
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            results["hang"] += 1
            failures.append(("hang", script, name, ""))
            continue
        output = p.stdout + p.stderr
        if "Traceback" in output:
            results["traceback"] += 1
            failures.append(("traceback", script, name, output[-600:]))
        elif p.returncode == 0:
            results["exit 0 on a refused input"] += 1
            failures.append(("exit 0", script, name, output[-300:]))
        elif not p.stderr.strip().splitlines()[-1].startswith("error: "):
            results["no error line"] += 1
            failures.append(("no error line", script, name, output[-300:]))
        else:
            results["clean"] += 1
        if p.returncode != 0 and digests(run / "out") != {k: v for k, v in before.items()}:
            results["damaged checkpoint"] += 1
            failures.append(("damaged", script, name, ""))
    return results, failures, min(n, len(chosen))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scripts", type=int, default=40, help="script runs (subprocess, a few seconds each)")
    parser.add_argument("--timeout", type=int, default=20, help="seconds before a reader case counts as a hang")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show_accepted", action="store_true", help="list the inputs a reader accepted")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tok = get_tokenizer()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results, per_reader, failures, rejected = Counter(), Counter(), [], []
        for reader, name, path, data, fn in reader_cases(tok, work, rng):
            if data != "<keep>":
                write_case(path, data)
            outcome, detail = attempt(fn, path, args.timeout)
            results[outcome] += 1
            per_reader[reader] += 1
            if outcome == "accepted" and args.show_accepted:
                print("accepted", reader, "|", name)
            if outcome in ("raw", "crash", "hang", "unnamed"):
                failures.append((outcome, reader, name, detail))
            if outcome == "clean" and data not in ("<keep>", None, b"<dir>") and reader != "gpt2 folder":
                rejected.append((reader, name, path, data))
        n_cases = sum(results.values())
        print(f"readers: {n_cases} malformed inputs in {time.time() - t0:.0f}s "
              f"({', '.join(f'{k} {v}' for k, v in per_reader.items())})")
        print(f"  refused with a clear error naming the file: {results['clean']}; accepted: {results['accepted']}")
        print(f"  raw exceptions: {results['raw']}; crashes: {results['crash']}; hangs: {results['hang']}; "
              f"clear errors not naming the file: {results['unnamed']}")
        script_results, script_failures, n_runs = Counter(), [], 0
        if args.scripts:
            t1 = time.time()
            script_results, script_failures, n_runs = script_runs(tok, rejected, work, args.scripts, rng, 300)
            r = script_results
            print(f"scripts: {n_runs} runs on refused inputs in {time.time() - t1:.0f}s; clean error line and exit 1: "
                  f"{r['clean']}")
            print(f"  tracebacks: {r['traceback']}; exit 0: {r['exit 0 on a refused input']}; "
                  f"no error line: {script_results['no error line']}; hangs: {script_results['hang']}; "
                  f"damaged checkpoints: {script_results['damaged checkpoint']}")
        for f in (failures + script_failures)[:30]:
            print("FAIL", " | ".join(str(x) for x in f))
        bad = results["raw"] + results["crash"] + results["hang"] + sum(
            v for k, v in script_results.items() if k != "clean")
        print(f"summary: {n_cases + n_runs} inputs, {bad} failures "
              f"(raw exceptions {results['raw']}, tracebacks {script_results['traceback']}, crashes/hangs "
              f"{results['crash'] + results['hang'] + script_results['hang']}, damaged checkpoints "
              f"{script_results['damaged checkpoint']})")
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
