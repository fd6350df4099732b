"""Command-line config and checkpoints: clear errors, atomic writes, weights_only loading."""

import os
from dataclasses import dataclass

import pytest
import torch

from minigpt_rlhf.checkpoint import atomic_save, load_checkpoint, model_from_checkpoint, save_checkpoint, unwrap
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.data import DataError
from minigpt_rlhf.model import GPT, GPTConfig
from minigpt_rlhf.tokenizer import SPLIT_PATTERN, Tokenizer, train_bpe


@dataclass
class Cfg:
    steps: int = 10  # optimizer steps
    lr: float = 1e-3  # learning rate
    name: str = "x"  # a name
    compile: bool = False  # compile or not


def test_overrides_presets_and_types():
    c = parse_config(Cfg, ["--steps=20", "--lr=3e-4", "--compile=True"], presets={"big": {"steps": 99}})
    assert (c.steps, c.lr, c.compile, c.name) == (20, 3e-4, True, "x")
    c = parse_config(Cfg, ["--steps=5", "--preset=big"], presets={"big": {"steps": 99, "name": "b"}})
    assert (c.steps, c.name) == (5, "b")  # command line beats the preset, whatever the order
    assert parse_config(Cfg, ["--steps=1e3"]).steps == 1000


@pytest.mark.parametrize("argv, message", [
    (["--stesp=3"], "Did you mean --steps"),
    (["--steps=abc"], "not a valid int"),
    (["--compile=maybe"], "not a valid bool"),
    (["steps=3"], "use --field=value"),
    (["--preset=huge"], "unknown preset"),
])
def test_bad_options_are_clear_errors(argv, message):
    with pytest.raises(SystemExit) as e:
        parse_config(Cfg, argv, presets={"big": {}})
    assert message in str(e.value)


def test_help_lists_each_field_with_its_comment(capsys):
    with pytest.raises(SystemExit):
        parse_config(Cfg, ["--help"])
    out = capsys.readouterr().out
    assert "--steps" in out and "optimizer steps" in out and "learning rate" in out


def small_tok():
    return Tokenizer("bpe", train_bpe("hello world " * 50, 270), SPLIT_PATTERN)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    tok = small_tok()
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=tok.n_vocab, n_layer=1, n_head=2, n_embd=16)).eval()
    compiled_like = torch.nn.Module()
    compiled_like._orig_mod = model  # what torch.compile wraps a module in
    assert unwrap(compiled_like) is model
    path = tmp_path / "ck" / "model.pt"
    save_checkpoint(path, compiled_like, tok, Cfg(), step=7)
    ckpt = load_checkpoint(path)
    assert not any(k.startswith("_orig_mod") for k in ckpt["model"]) and ckpt["step"] == 7
    assert ckpt["config"]["steps"] == 10
    loaded = model_from_checkpoint(ckpt, tok).eval()
    x = torch.randint(0, tok.n_vocab, (2, 9))
    torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


def test_checkpoint_with_another_tokenizer_is_refused(tmp_path):
    tok = small_tok()
    other = Tokenizer("bpe", train_bpe("completely different text " * 50, 270), SPLIT_PATTERN)
    model = GPT(GPTConfig(block_size=16, vocab_size=tok.n_vocab, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(tmp_path / "m.pt", model, tok)
    with pytest.raises(ValueError, match="m.pt"):
        model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"), other, where=str(tmp_path / "m.pt"))


def test_missing_and_corrupt_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run python train_sft.py"):
        load_checkpoint(tmp_path / "none.pt", "SFT checkpoint", "run python train_sft.py")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    torch.save({"model": {}, "model_config": {}, "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")


def test_a_write_interrupted_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    atomic_save({"model": {"w": torch.ones(3)}, "model_config": {}}, path)

    def crash(obj, f, *a, **k):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"model": {"w": torch.zeros(3)}, "model_config": {}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["model.pt"]  # no temp file left behind
