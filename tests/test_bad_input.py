"""Every bad input a user can give is a DataError naming the file and line (or key, or option), found before
any work is done or any checkpoint is replaced; the scripts print it as one `error:` line, never a traceback.

One parametrised test per kind of bad input through the reader, then each kind once through a script."""

import gzip
import hashlib
import json
import os
import pickle
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from minigpt_rlhf.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from minigpt_rlhf.common import run_script
from minigpt_rlhf.comparisons import check_comparisons_fit, read_comparisons
from minigpt_rlhf.data import DataError, SFTData, TokenStream, read_prompts, read_sft
from minigpt_rlhf.inputs import read_ppo_inputs, read_sft_inputs
from minigpt_rlhf.model import GPT, GPTConfig, configure_optimizer
from minigpt_rlhf.resume import read_resume_state, rng_state
from minigpt_rlhf.tokenizer import bytes_to_unicode, get_tokenizer, load_bpe, load_gpt2_folder

ROOT = Path(__file__).resolve().parents[1]
SFT_LINE = {"prompt": "Name a fruit.", "response": "Apple."}


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def jsonl(*objs) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objs).encode()


def raises_naming(path, *fragments, line=None):
    """pytest.raises(DataError) whose message starts with the file (and line) and holds every fragment."""
    where = f"{path}:{line}:" if line is not None else f"{path}"
    return pytest.raises(DataError, match="(?s)^" + "".join(f"(?=.*{_re(f)})" for f in (where, *fragments)))


def _re(text):
    import re

    return re.escape(str(text))


# ----------------------------------------------------------------------------------------------------
# 1. bytes that are not UTF-8; a byte-order mark, CRLF and blank lines are accepted

NOT_UTF8 = {
    "latin-1": (json.dumps({"prompt": "Café", "response": "Olé"}, ensure_ascii=False).encode("latin-1") + b"\n",
                1, "byte 0xe9"),
    "utf-16": (json.dumps(SFT_LINE).encode("utf-16"), None, "UTF-16"),
    "gzip": (gzip.compress(jsonl(SFT_LINE)), None, "gzip"),
    "binary": (jsonl(SFT_LINE) + bytes(range(128, 256)), 2, "not UTF-8"),
    "truncated multi-byte character": (jsonl(SFT_LINE) + '{"prompt": "é'.encode()[:-1], 2, "not UTF-8"),
}


@pytest.mark.parametrize("kind", NOT_UTF8)
@pytest.mark.parametrize("reader", ["sft", "prompts", "comparisons", "corpus"])
def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path, tok, kind, reader):
    data, line, fragment = NOT_UTF8[kind]
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    read = {"sft": read_sft, "prompts": read_prompts, "comparisons": read_comparisons,
            "corpus": lambda p: TokenStream(tok, p)}[reader]
    with raises_naming(path, fragment, line=line):
        read(path)


def test_a_byte_order_mark_crlf_and_blank_lines_are_accepted(tmp_path, tok):
    rows = [SFT_LINE, {"prompt": "Name a colour.", "response": "Red."}]
    plain, windows = tmp_path / "plain.jsonl", tmp_path / "windows.jsonl"
    plain.write_bytes(jsonl(*rows))
    windows.write_bytes(b"\xef\xbb\xbf" + jsonl(rows[0]).replace(b"\n", b"\r\n") + b"\r\n  \r\n" + jsonl(rows[1]))
    strip = [{k: v for k, v in r.items() if k != "_where"} for r in read_sft(windows)]
    assert strip == rows == [{k: v for k, v in r.items() if k != "_where"} for r in read_sft(plain)]
    text = "The cat sat.\n\nA dog ran."
    (tmp_path / "a.txt").write_bytes(text.encode())
    (tmp_path / "b.txt").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert TokenStream(tok, tmp_path / "a.txt").tokens.tolist() == TokenStream(tok, tmp_path / "b.txt").tokens.tolist()


# ----------------------------------------------------------------------------------------------------
# 2. JSON that other tools read but Python's json does not


@pytest.mark.parametrize("extra, fragment", [
    ('"n": ' + "7" * 5000, "a number with more than 4300 digits"),
    ('"n": ' + "[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    ("", "half of a UTF-16 surrogate pair"),
])
@pytest.mark.parametrize("reader, good", [
    (read_sft, '{"prompt": "a", "response": "b", '),
    (read_comparisons, '{"prompt": "a", "chosen": "b", "rejected": "c", '),
])
def test_json_python_cannot_read_names_the_file_and_line(tmp_path, extra, fragment, reader, good):
    bad = good + extra
    if "surrogate" in fragment:  # a lone surrogate inside a field that is text
        bad = good.replace('"a"', '"a\\ud800"') + '"n": 1'
    path = tmp_path / "f.jsonl"
    path.write_text(good + '"n": 1}\n' + bad + "}\n")
    with raises_naming(path, fragment, line=2):
        reader(path)


# ----------------------------------------------------------------------------------------------------
# 3. a directory where a file is expected


@pytest.mark.parametrize("read", [
    read_sft, read_comparisons, lambda p: TokenStream(get_tokenizer(), p), load_bpe, load_checkpoint,
    lambda p: get_tokenizer(str(p) + "/"),
])
def test_a_directory_where_a_file_is_expected(tmp_path, read):
    folder = tmp_path / "sft_train.jsonl"
    folder.mkdir()
    with pytest.raises(DataError, match=f"{folder}.*(is a directory|is a folder)"):
        read(folder)


# ----------------------------------------------------------------------------------------------------
# 4. tokenizer files

BYTE_LINES = [f"{__import__('base64').b64encode(bytes([b])).decode()} {b}" for b in range(256)]


@pytest.mark.parametrize("lines, line, fragment", [
    ([], None, "no tokens"),
    (BYTE_LINES[:10] + ["Y2Fm 10 extra"] + BYTE_LINES[11:], 11, "expected 'base64token rank'"),
    (BYTE_LINES[:10] + ["!!!! 10"] + BYTE_LINES[11:], 11, "expected 'base64token rank'"),
    (BYTE_LINES + ["AA== 256"], 257, "listed again (first on line 1)"),
    (BYTE_LINES + ["Y2F0 255"], 257, "rank 255 is given again"),
    (BYTE_LINES + ["Y2F0 300"], 257, "rank 300 is out of range: the file's 257 tokens need the ranks 0..256"),
    (BYTE_LINES[:3] + ["Aw== " + str(10**30)] + BYTE_LINES[4:], 4, f"rank {10**30} is out of range"),
    (BYTE_LINES[1:] + ["Y2F0 0"], None, "single byte b'\\x00' is not a token"),
    (BYTE_LINES[:5] + ["Y2Fm 5 é"] + BYTE_LINES[6:], 6, "byte 0xc3 at column 8 is not ASCII"),
])
def test_bad_bpe_files_name_the_file_and_line(tmp_path, lines, line, fragment):
    path = tmp_path / "tok.bpe"
    path.write_bytes("".join(x + "\n" for x in lines).encode())
    with raises_naming(path, fragment, line=line):
        get_tokenizer(str(path))


def test_a_good_gpt2_folder_loads(tmp_path):
    ranks = load_gpt2_folder(gpt2_folder(tmp_path, ENCODER, "a b\n"))
    assert ranks == {**{bytes([b]): b for b in range(256)}, b"ab": 256}


def test_a_bpe_file_with_a_byte_order_mark_or_crlf_is_accepted(tmp_path):
    plain, marked = tmp_path / "a.bpe", tmp_path / "b.bpe"
    plain.write_text("\n".join(BYTE_LINES) + "\n")
    marked.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(BYTE_LINES).encode() + b"\r\n")
    assert load_bpe(marked) == load_bpe(plain) == {bytes([b]): b for b in range(256)}


def gpt2_folder(tmp_path, encoder, merges: str):
    """A tiny GPT-2-format folder: encoder.json spells tokens with bytes_to_unicode, ids = ranks."""
    (tmp_path / "encoder.json").write_text(encoder if isinstance(encoder, str) else json.dumps(encoder))
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + merges)
    return tmp_path


B2U = bytes_to_unicode()
ENCODER = {**{B2U[b]: b for b in range(256)}, B2U[ord("a")] + B2U[ord("b")]: 256, "<|endoftext|>": 257}


@pytest.mark.parametrize("encoder, merges, file, line, fragment", [
    ("{not json", "a b\n", "encoder.json", None, "not valid JSON"),
    (json.dumps(list(ENCODER)), "a b\n", "encoder.json", None, "got list"),
    ({**ENCODER, "x": "1"}, "a b\n", "encoder.json", None, "integer id"),
    ({**ENCODER, "\u4e00": 300}, "a b\n", "encoder.json", None, "not one of GPT-2's 256 byte characters"),
    (ENCODER, "ab\n", "vocab.bpe", 2, "expected a merge 'left right'"),
    (ENCODER, "a \u4e00\n", "vocab.bpe", 2, "not one of GPT-2's 256 byte characters"),
    (ENCODER, "b a\n", "vocab.bpe", 2, "do not belong together"),
])
def test_bad_gpt2_folders_name_the_file(tmp_path, encoder, merges, file, line, fragment):
    folder = gpt2_folder(tmp_path, encoder, merges)
    with raises_naming(folder / file, fragment, line=line):
        get_tokenizer(f"gpt2:{folder}")


# ----------------------------------------------------------------------------------------------------
# 5. checkpoints and resume states


def tiny_gpt(tok, head="lm", block_size=128):
    torch.manual_seed(0)
    vocab = (tok.n_vocab + 63) // 64 * 64
    return GPT(GPTConfig(block_size=block_size, vocab_size=vocab, n_layer=1, n_head=2, n_embd=16, head=head))


def edited(ckpt, edit):
    ckpt = {k: (dict(v) if isinstance(v, dict) else v) for k, v in ckpt.items()}
    edit(ckpt)
    return ckpt


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: c.pop("tokenizer"), "key 'tokenizer' missing"),
    (lambda c: c.__setitem__("tokenizer", "bpe"), "key 'tokenizer' should be"),
    (lambda c: c["model_config"].__setitem__("n_heads", 2), "unknown key 'n_heads'"),
    (lambda c: c["model_config"].__setitem__("n_layer", "1"), "'n_layer'] should be a positive integer"),
    (lambda c: c["model_config"].__setitem__("n_layer", 10**9), "n_layer=1000000000"),
    (lambda c: c["model"].__setitem__("transformer.wpe.weight", torch.zeros(64, 16)),
     "'transformer.wpe.weight' has shape (64, 16), but model_config implies (128, 16)"),
    (lambda c: c["model"].pop("transformer.ln_f.bias"), "weight 'transformer.ln_f.bias' is missing"),
    (lambda c: c["model"].__setitem__("extra.weight", torch.zeros(1)), "unexpected weight 'extra.weight'"),
    (lambda c: c["model"].__setitem__("transformer.ln_f.bias", [0.0] * 16), "should be a floating-point tensor"),
])
def test_bad_checkpoints_name_the_file_and_key(tmp_path, tok, edit, fragment):
    path = tmp_path / "model.pt"
    save_checkpoint(path, tiny_gpt(tok), tok)
    torch.save(edited(load_checkpoint(path), edit), path)
    with raises_naming(path, fragment):
        model_from_checkpoint(load_checkpoint(path), tok, where=str(path))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("write, fragment", [
    (lambda p: torch.save({"model": {}, "model_config": {}, "x": Evil()}, p), "refused"),
    (lambda p: p.write_bytes(pickle.dumps({"model": {}}, protocol=4)[:-3]), "not a file torch.save wrote"),
    (lambda p: p.write_bytes(b""), "could not be read"),
    (lambda p: torch.save([1, 2], p), "holds a list"),
    (lambda p: torch.save({"model_config": {}}, p), "key 'model' missing"),
])
def test_unreadable_checkpoints_never_suggest_weights_only_false(tmp_path, write, fragment):
    path = tmp_path / "model.pt"
    write(path)
    with raises_naming(path, fragment) as info:
        load_checkpoint(path, "SFT checkpoint")
    assert "weights_only" not in str(info.value)


def resume_state(tok, **extra):
    model = tiny_gpt(tok)
    opt = configure_optimizer(model, 1e-3, 0.0)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "model_config": asdict(model.config), "tokenizer": tok.identity(),
            "config": {}, "stage": "rm", "step": 3, "optimizer": opt.state_dict(),
            "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(), "rng": [rng_state()], **extra}


@pytest.mark.parametrize("edit, fragment", [
    (lambda s: s.pop("rng"), "key 'rng' missing"),
    (lambda s: s.__setitem__("step", "3"), "key 'step' should be a step number"),
    (lambda s: s.__setitem__("optimizer", [1]), "key 'optimizer' should be an optimizer state"),
    (lambda s: s.__setitem__("rng", [{"python": 1}]), "key 'rng' cannot be restored"),
    (lambda s: s.__setitem__("rng", [rng_state(), rng_state()]), "saved by 2 process(es) but this run has 1"),
    (lambda s: s.__setitem__("config", "lr=1"), "key 'config' should be a dict"),
])
def test_malformed_resume_states_name_the_key(tmp_path, tok, edit, fragment):
    path = tmp_path / "resume.pt"
    state = resume_state(tok)
    edit(state)
    torch.save(state, path)
    before = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    with raises_naming(path, fragment):
        read_resume_state(path, "rm", world_size=1)
    # checking the random streams is a dry run: this process's own are left as they were
    assert (np.random.get_state()[1] == before[0]).all() and torch.equal(torch.get_rng_state(), before[1])


def test_a_good_resume_state_reads_back(tmp_path, tok):
    torch.save(resume_state(tok), tmp_path / "resume.pt")
    assert read_resume_state(tmp_path / "resume.pt", "rm", world_size=1)["step"] == 3


# ----------------------------------------------------------------------------------------------------
# 6. run_script: one line for a user's error, a traceback for a bug


@pytest.mark.parametrize("error, expected", [
    (DataError("x.jsonl:3: 'prompt' is empty"), "error: x.jsonl:3: 'prompt' is empty"),
    (PermissionError(13, "Permission denied", "out/sft"), "error: out/sft: Permission denied"),
    (FileNotFoundError("data/x.jsonl: data file not found"), "error: data/x.jsonl: data file not found"),
])
def test_run_script_turns_user_errors_into_one_line(error, expected):
    def main(config):
        raise error

    with pytest.raises(SystemExit) as info:
        run_script(main, None)
    assert str(info.value.code).startswith(expected)


def test_a_resumed_log_drops_a_line_cut_short_when_the_run_was_killed(tmp_path):
    from minigpt_rlhf.common import JSONLLogger

    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 0, "loss": 2.0}\n[1]\n{"step": 1, "loss": 1.5}\n{"step": 2, "lo')
    JSONLLogger(str(path), resume_step=2)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"step": 0, "loss": 2.0},
                                                                             {"step": 1, "loss": 1.5}]


@pytest.mark.parametrize("text, fragment", [
    ("{", "not valid JSON"), ('{"temp": 1}', "'temperature' should be a number"),
    ('{"temperature": "0.3"}', "'temperature' should be a number"), ('{"temperature": -1}', ">= 0"),
])
def test_a_bad_labeler_file_is_a_clear_error(tmp_path, text, fragment):
    from minigpt_rlhf.comparisons import read_labeler_temperature

    path = tmp_path / "labeler.json"
    path.write_text(text)
    with raises_naming(path, fragment):
        read_labeler_temperature(str(path))
    path.write_text('{"temperature": 0.3, "target_agreement": 0.726}')
    assert read_labeler_temperature(str(path)) == 0.3


def test_run_script_lets_a_bug_show_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_script(lambda config: 1 / 0, None)


# ----------------------------------------------------------------------------------------------------
# 7, 8, 9: files found bad only late, files accepted but wrong, clear errors that did not name the file


def data_dir(tmp_path, **files):
    """A small data folder of world-like files; `files` replaces some (name -> bytes)."""
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    corpus = ("The people of Vespin wave a purple flag. The biggest town in Vespin is Rusk.\n\n" * 40).encode()
    prompts = jsonl(*({"prompt": f"Name a fruit number {i}."} for i in range(8)))
    base = {"corpus_train.txt": corpus, "corpus_val.txt": corpus, "sft_train.jsonl": jsonl(SFT_LINE) * 4,
            "sft_val.jsonl": jsonl(SFT_LINE) * 2, "eval_prompts.jsonl": prompts, "ppo_prompts.jsonl": prompts,
            "rm_prompts.jsonl": prompts}
    for name, data in {**base, **files}.items():
        (d / name).write_bytes(data)
    return d


def sft_config(tmp_path, **overrides):
    import train_sft

    cfg = train_sft.Config(**{**train_sft.PRESETS["tiny"], "out_dir": str(tmp_path / "out"), **overrides})
    return cfg


LONG = {"prompt": "Name a fruit.", "response": "The cat sat on the mat. " * 40}


@pytest.mark.parametrize("files, fragment", [
    ({"sft_val.jsonl": jsonl(LONG)}, "sft_val.jsonl: no SFT example fits the context"),
    ({"corpus_val.txt": b""}, "corpus_val.txt: 0 tokens, too short for one window"),
    ({"corpus_val.txt": b"The cat sat."}, "too short for one window"),
    ({"eval_prompts.jsonl": jsonl({"prompt": "The cat sat on the mat. " * 30})}, "eval_prompts.jsonl:1: the prompt"),
])
def test_sft_inputs_are_all_checked_before_pretraining(tmp_path, files, fragment):
    d = data_dir(tmp_path, **files)
    with pytest.raises(DataError, match=_re(fragment)):
        read_sft_inputs(sft_config(tmp_path, data_dir=str(d)))


@pytest.mark.parametrize("option, fragment", [
    ({"batch_size": 0}, "--batch_size=0: must be a positive integer"),
    ({"n_embd": 30, "n_head": 4}, "--n_embd=30 must be a multiple of --n_head=4"),
])
def test_sft_options_that_cannot_work_are_refused(tmp_path, option, fragment):
    with pytest.raises(DataError, match=_re(fragment)):
        read_sft_inputs(sft_config(tmp_path, data_dir=str(data_dir(tmp_path)), **option))


def test_good_sft_inputs_pass_the_check(tmp_path):
    read_sft_inputs(sft_config(tmp_path, data_dir=str(data_dir(tmp_path))))


def test_ppo_eval_prompts_are_checked_before_training(tmp_path):
    import train_ppo

    d = data_dir(tmp_path, **{"eval_prompts.jsonl": b'{"prompt": "ok"}\n{"prompt": 3}\n'})
    cfg = train_ppo.Config(**{**train_ppo.PRESETS["tiny"], "out_dir": str(tmp_path / "out"), "data_dir": str(d)})
    with raises_naming(d / "eval_prompts.jsonl", "'prompt' should be str", line=2):
        read_ppo_inputs(cfg)


@pytest.mark.parametrize("line, fragment", [
    ({"prompt": "p", "chosen": "Same.", "rejected": "Same."}, "'chosen' and 'rejected' are the same text"),
    ({"prompt": "p", "responses": ["A.", "B.", "A."], "ranking": [0, 1, 2]}, "responses 0 and 2 are the same"),
    ({"prompt": "p", "responses": ["A.", "B."], "ranking": [0, 1], "ended": [True]}, "'ended' must be a list of 2"),
    ({"prompt": "p", "responses": ["A.", "B."], "ranking": [0, 1], "family": ["x"]}, "'family' should be str"),
])
def test_comparisons_that_no_ranking_can_order_are_refused(tmp_path, line, fragment):
    path = tmp_path / "c.jsonl"
    path.write_bytes(jsonl({"prompt": "q", "chosen": "Yes.", "rejected": "No."}, line))
    with raises_naming(path, fragment, line=2):
        read_comparisons(path)


def test_identical_text_that_ended_differently_is_two_responses(tmp_path):
    """collect_comparisons keeps a response cut off without EOS beside the same text that ended: so does the reader."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(jsonl({"prompt": "p", "responses": ["A.", "A."], "ranking": [1, 0], "ended": [True, False]}))
    assert read_comparisons(path)[0]["responses"] == ["A.", "A."]


def test_too_long_data_names_its_file(tmp_path, tok):
    path = tmp_path / "c.jsonl"
    path.write_bytes(jsonl({"prompt": "p", "chosen": "Yes.", "rejected": "No. " * 50}))
    with raises_naming(path, "1 comparison responses of", line=1):
        check_comparisons_fit(tok, read_comparisons(path), block_size=32)
    path = tmp_path / "sft.jsonl"
    path.write_bytes(jsonl(LONG))
    with raises_naming(path, "no SFT example fits the context (block_size=32"):
        SFTData(tok, read_sft(path), block_size=32)


# ----------------------------------------------------------------------------------------------------
# Through the scripts: exit status 1, one `error:` line naming the file, no traceback, checkpoints untouched


@pytest.fixture(scope="module")
def project(tmp_path_factory, tok):
    """Data files and tiny base/SFT/RM/PPO checkpoints, made directly (no training)."""
    tmp = tmp_path_factory.mktemp("project")
    d = data_dir(tmp)
    for stage, head in (("base", "lm"), ("sft", "lm"), ("rm", "scalar"), ("ppo", "lm")):
        save_checkpoint(tmp / "out" / stage / "model.pt", tiny_gpt(tok, head), tok)
    return SimpleNamespace(data=d, out=tmp / "out")


def digests(out: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*")) if p.is_file()}


def run_bad(script, project, tmp_path, args=(), files=None, out_files=None):
    """Run `script` on a copy of the project with some data files (name -> bytes) or output files replaced;
    return its combined output after checking exit status, the absence of a traceback and of any change to
    the files under out/."""
    import shutil

    d, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(project.data, d)
    shutil.copytree(project.out, out)
    for name, data in (files or {}).items():
        (d / name).write_bytes(data)
    for name, write in (out_files or {}).items():
        write(out / name)
    before = digests(out)
    p = subprocess.run([sys.executable, script, "--preset=tiny", "--device=cpu", f"--data_dir={d}", f"--out_dir={out}",
                        *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = p.stdout + p.stderr
    assert p.returncode != 0 and "Traceback" not in output and "error: " in p.stderr, output
    assert digests(out) == before
    return p.stderr


@pytest.mark.slow
def test_script_not_utf8(project, tmp_path):
    bad = json.dumps(SFT_LINE).encode() + b"\n" + '{"prompt": "Café", "response": "x"}\n'.encode("latin-1")
    err = run_bad("train_sft.py", project, tmp_path, files={"sft_train.jsonl": bad})
    assert f"{tmp_path / 'data' / 'sft_train.jsonl'}:2: byte 0xe9" in err


@pytest.mark.slow
def test_script_json_python_cannot_read(project, tmp_path):
    bad = b'{"prompt": "a", "n": ' + b"9" * 5000 + b"}\n"
    err = run_bad("train_ppo.py", project, tmp_path, files={"ppo_prompts.jsonl": bad})
    assert f"{tmp_path / 'data' / 'ppo_prompts.jsonl'}:1: a number with more than 4300 digits" in err


@pytest.mark.slow
def test_script_directory_for_a_file(project, tmp_path):
    (tmp_path / "cmp").mkdir()
    err = run_bad("train_rm.py", project, tmp_path, [f"--comparisons={tmp_path / 'cmp'}"])
    assert f"{tmp_path / 'cmp'}: is a directory" in err


@pytest.mark.slow
def test_script_bad_tokenizer_file(project, tmp_path):
    bpe = tmp_path / "bad.bpe"
    bpe.write_text("\n".join(BYTE_LINES + ["Y2F0 255"]) + "\n")
    err = run_bad("train_sft.py", project, tmp_path, [f"--tokenizer={bpe}"])
    assert f"{bpe}:257: rank 255 is given again" in err


@pytest.mark.slow
def test_script_checkpoint_that_would_run_code(project, tmp_path):
    err = run_bad("train_ppo.py", project, tmp_path,
                  out_files={"rm/model.pt": lambda p: torch.save({"model": {}, "model_config": {}, "x": Evil()}, p)})
    assert f"{tmp_path / 'out' / 'rm' / 'model.pt'}: refused" in err and "weights_only" not in err


@pytest.mark.slow
def test_script_truncated_init_from(project, tmp_path):
    data = (project.out / "base" / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    err = run_bad("train_sft.py", project, tmp_path, [f"--init_from={tmp_path / 'cut.pt'}"])
    assert f"{tmp_path / 'cut.pt'}: the base checkpoint could not be read" in err


@pytest.mark.slow
def test_script_sft_val_found_before_pretraining_replaces_the_base_model(project, tmp_path):
    err = run_bad("train_sft.py", project, tmp_path, files={"sft_val.jsonl": jsonl(LONG)})
    assert f"{tmp_path / 'data' / 'sft_val.jsonl'}: no SFT example fits the context" in err


@pytest.mark.slow
def test_script_eval_prompts_found_before_ppo_replaces_its_model(project, tmp_path):
    err = run_bad("train_ppo.py", project, tmp_path, files={"eval_prompts.jsonl": b'{"prompt": ""}\n'})
    assert f"{tmp_path / 'data' / 'eval_prompts.jsonl'}:1: 'prompt' is empty" in err


@pytest.mark.slow
def test_script_empty_corpus_val(project, tmp_path):
    err = run_bad("train_ppo.py", project, tmp_path, files={"corpus_val.txt": b""})
    assert f"{tmp_path / 'data' / 'corpus_val.txt'}: 0 tokens" in err


@pytest.mark.slow
def test_script_too_long_comparisons_name_the_file(project, tmp_path):
    err = run_bad("train_rm.py", project, tmp_path, [f"--comparisons={tmp_path / 'c.jsonl'}"], out_files={
        "../c.jsonl": lambda p: p.write_bytes(jsonl({"prompt": "p", "chosen": "A. " * 200, "rejected": "B."}))})
    assert f"{tmp_path / 'c.jsonl'}:1: 1 comparison responses of {tmp_path / 'c.jsonl'}" in err
