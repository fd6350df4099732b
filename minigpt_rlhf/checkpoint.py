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
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

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


def load_checkpoint(path, what: str = "checkpoint", hint: str = "", map_location="cpu") -> dict:
    """torch.load with weights_only=True (no arbitrary unpickling), and a clear error for a missing or
    unreadable file that names the file and, via `hint`, the command that makes it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}." + (f" {hint}" if hint else ""))
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{what} at {path} could not be read ({type(e).__name__}: {e}). "
                           f"It may be truncated or not a minigpt_rlhf checkpoint." +
                           (f" {hint}" if hint else "")) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise RuntimeError(f"{what} at {path} is not a minigpt_rlhf checkpoint (no model/model_config)")
    return ckpt


def model_from_checkpoint(ckpt: dict, tokenizer=None, where: str = "checkpoint", **config_overrides) -> GPT:
    """Rebuild the model a checkpoint was saved from; check it was made with `tokenizer`."""
    if tokenizer is not None:
        from .tokenizer import check_tokenizer_matches

        check_tokenizer_matches(ckpt["tokenizer"], tokenizer, where)
    config = GPTConfig(**{**ckpt["model_config"], **config_overrides})
    model = GPT(config)
    model.load_state_dict(ckpt["model"])
    return model
