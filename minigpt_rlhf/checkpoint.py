"""Checkpoints: written atomically, loaded without unpickling arbitrary objects.

A checkpoint is a plain dict of tensors and Python primitives:
  model         the UNCOMPILED, unwrapped module's state_dict (no `_orig_mod.` or `module.` prefixes)
  model_config  asdict(GPTConfig)
  tokenizer     Tokenizer.identity(): loading with a different tokenizer is an error
  config        asdict(the script's Config)
  step, stage   and whatever else a stage needs to resume (optimizer, rng, ...)
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
import zipfile
from dataclasses import asdict, fields
from pathlib import Path

import torch

from .data import DataError
from .model import GPT, GPTConfig


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers: what we save."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def atomic_save(obj, path: str | Path):
    """torch.save to a temp file in the same folder, fsync, then rename over `path`: a crash at any moment
    leaves either the old file or the new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def base_checkpoint_path(init_from: str, out_dir: str) -> str:
    """The base model SFT started from: its --init_from checkpoint, else the one it pretrained, out/base/model.pt
    (which may not exist, e.g. after --init_from=gpt2:/folder)."""
    return init_from if init_from.endswith(".pt") else os.path.join(out_dir, "base", "model.pt")


def save_checkpoint(path, model, tokenizer, config=None, **extra):
    model = unwrap(model)
    payload = {
        "model": model.state_dict(),
        "model_config": asdict(model.config),
        "tokenizer": tokenizer.identity(),
        "config": asdict(config) if config is not None else {},
        **extra,
    }
    atomic_save(payload, path)


def load_checkpoint(path, what: str = "checkpoint", hint: str = "", map_location="cpu", mmap: bool = False) -> dict:
    """torch.load with weights_only=True (no arbitrary unpickling), and a clear error, naming the file and,
    via `hint`, the command that makes it, for a missing, unreadable, truncated or refused file or one that
    is not a minigpt_rlhf checkpoint. mmap=True maps the tensors instead of reading them (a cheap look)."""
    path = Path(path)
    hint = f" {hint}" if hint else ""
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found.{hint}")
    if not path.is_file():
        raise DataError(f"{path}: is {'a directory' if path.is_dir() else 'not a regular file'}, not a {what}. "
                        f"Pass the path of the .pt file.{hint}")
    try:  # torch does not check the zip's CRC-32s: a flipped bit in a weight would load silently
        damaged = zipfile.ZipFile(path).testzip() if zipfile.is_zipfile(path) else None
    except Exception as e:  # zipfile.BadZipFile, zlib.error, EOFError, ...
        damaged = f"{type(e).__name__}: {str(e)[:80]}"
    if damaged:
        raise DataError(f"{path}: the {what} is damaged ({damaged} fails its checksum); it was truncated or changed "
                        f"after it was written.{hint}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses anyway
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True,
                              mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        # torch's own message advises turning the safety check off; we never do: a checkpoint is data only
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise DataError(f"{path}: refused: the {what} holds a Python object ({found.group(1)}) that would run "
                            "code when unpickled, not only tensors and plain values. Load only checkpoints that "
                            f"minigpt_rlhf wrote, or re-save its tensors as a plain dict.{hint}") from None
        raise DataError(f"{path}: the {what} is not a file torch.save wrote (or it is damaged).{hint}") from None
    except Exception as e:  # a truncated zip (RuntimeError), an empty file (EOFError), an I/O error, ...
        first = str(e).split(".")[0][:160]
        raise DataError(f"{path}: the {what} could not be read ({type(e).__name__}: {first}); it may be "
                        f"truncated or not a minigpt_rlhf checkpoint.{hint}") from None
    if not isinstance(ckpt, dict):
        raise DataError(f"{path}: holds a {type(ckpt).__name__}, not a minigpt_rlhf {what} (a dict with "
                        f"'model' and 'model_config').{hint}")
    for key in ("model", "model_config"):
        if key not in ckpt:
            raise DataError(f"{path}: key {key!r} missing: not a minigpt_rlhf {what}.{hint}")
    return ckpt


_POSITIVE_INTS = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd")


def _model_config(ckpt: dict, where: str, **config_overrides) -> GPTConfig:
    """The GPTConfig a checkpoint was saved with, after checking that its weights are exactly those of that
    model (every key, no extra, every shape): what load_state_dict would find, said in our words, and
    found without building the model (a meta-device skeleton has shapes and no storage)."""
    cfg, weights = ckpt.get("model_config"), ckpt.get("model")
    if not isinstance(cfg, dict) or not isinstance(weights, dict):
        raise DataError(f"{where}: keys 'model' and 'model_config' should be dicts: the file is damaged or not a "
                        "minigpt_rlhf checkpoint")
    known = {f.name for f in fields(GPTConfig)}
    unknown = sorted(str(k) for k in set(cfg) - known)
    if unknown:
        raise DataError(f"{where}: model_config has unknown key {unknown[0]!r} (known: {sorted(known)}). It was "
                        "not written by this version of minigpt_rlhf")
    cfg = {**cfg, **config_overrides}
    for key in _POSITIVE_INTS:
        if key in cfg and (type(cfg[key]) is not int or cfg[key] <= 0):
            raise DataError(f"{where}: model_config[{key!r}] should be a positive integer, got {cfg[key]!r}")
    checks = {"dropout": lambda v: type(v) in (int, float) and 0 <= v < 1, "bias": lambda v: type(v) is bool,
              "head": lambda v: v in ("lm", "scalar")}
    for key, ok in checks.items():
        if key in cfg and not ok(cfg[key]):
            raise DataError(f"{where}: model_config[{key!r}] has the invalid value {cfg[key]!r}")
    config = GPTConfig(**cfg)
    if config.n_embd % config.n_head:
        raise DataError(f"{where}: model_config n_embd={config.n_embd} is not a multiple of n_head={config.n_head}")
    if config.n_layer > len(weights):  # each block has weights: a larger n_layer cannot match (and is slow to build)
        raise DataError(f"{where}: model_config says n_layer={config.n_layer}, but the file holds only "
                        f"{len(weights)} weights")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
    for key, value in weights.items():
        if key not in expected:
            raise DataError(f"{where}: unexpected weight {key!r} in 'model' (not part of the model its model_config "
                            "describes). The file is damaged or from another program")
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise DataError(f"{where}: weight {key!r} should be a floating-point tensor, got "
                            f"{getattr(value, 'dtype', type(value).__name__)}")
        if tuple(value.shape) != expected[key]:
            raise DataError(f"{where}: weight {key!r} has shape {tuple(value.shape)}, but model_config implies "
                            f"{expected[key]}. The file is damaged or its model_config was edited")
    missing = [k for k in expected if k not in weights]
    if missing:
        raise DataError(f"{where}: weight {missing[0]!r} is missing from 'model' ({len(missing)} missing in all). "
                        "The file is damaged or incomplete")
    return config


def check_checkpoint(ckpt: dict, tokenizer=None, where: str = "checkpoint", head: str | None = None,
                     **config_overrides) -> GPTConfig:
    """Everything model_from_checkpoint needs, checked without building the model: the tokenizer it was made
    with is `tokenizer`, its weights fit its model_config, and its head is `head` ("lm" for a language model,
    "scalar" for a reward or value model) when given. Returns its GPTConfig."""
    if tokenizer is not None:
        from .tokenizer import check_tokenizer_matches

        if "tokenizer" not in ckpt:
            raise DataError(f"{where}: key 'tokenizer' missing, so the vocabulary it was trained with is unknown. "
                            "Use a checkpoint that minigpt_rlhf wrote")
        check_tokenizer_matches(ckpt["tokenizer"], tokenizer, where)
    config = _model_config(ckpt, where, **config_overrides)
    if head is not None and config.head != head:
        kinds = {"lm": "a language model (SFT, base or PPO policy)", "scalar": "a reward or value model"}
        raise DataError(f"{where}: is {kinds[config.head]} checkpoint, but {kinds[head]} is needed here. "
                        "Pass the checkpoint of the right stage")
    return config


def model_from_checkpoint(ckpt: dict, tokenizer=None, where: str = "checkpoint", **config_overrides) -> GPT:
    """Rebuild the model a checkpoint was saved from; check it was made with `tokenizer`."""
    model = GPT(check_checkpoint(ckpt, tokenizer, where, **config_overrides))
    model.load_state_dict(ckpt["model"])
    return model


def load_model(ckpt: dict, tokenizer, where: str, device, trainable: bool = False) -> GPT:
    """A model of RLHF's later steps, rebuilt from a checkpoint: dropout off (else PPO's ratio is not 1 on the
    first minibatch: tests/test_ppo_loop.py), in eval mode, on `device`; frozen (no gradients) unless
    `trainable` (the PPO policy and value model)."""
    model = model_from_checkpoint(ckpt, tokenizer, where, dropout=0.0).to(device).eval()
    return model if trainable else model.requires_grad_(False)
