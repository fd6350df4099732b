"""Exact resume and clean interruption, shared by the three stages.

A stage that stops early (Ctrl-C, `--stop_at=N`, or a kill after its last periodic save) leaves
out/<stage>/resume.pt, and `--resume=True` continues from it as if it had never stopped: the same
losses, step for step (tests/test_resume.py checks this for every stage). The file holds, besides the
uncompiled model:

  optimizer   optimizer.state_dict(): AdamW's moments and step counts
  scaler      the fp16 GradScaler's state (its scale), when there is one
  step        the next step to run; the LR schedule is a pure function of it
  rng         ONE ENTRY PER RANK: python, numpy and torch (+ cuda) global states, and the stage's own
              numpy Generator and torch Generator (its data order, rollout prompts, sampling noise)
  ...         whatever else the stage needs: SFT its data permutation and offset, PPO the value model
              and the KL controller

Everything is a tensor or a Python primitive, so it loads with torch.load(weights_only=True). It is
written atomically (checkpoint.atomic_save) by rank 0, and deleted when the stage finishes: a finished
stage has nothing to resume, and its result is out/<stage>/model.pt.
"""

from __future__ import annotations

import os
import random
import signal
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import check_checkpoint, load_checkpoint, save_checkpoint
from .data import DataError


def resume_path(out_dir: str, stage: str) -> str:
    return os.path.join(out_dir, stage, "resume.pt")


def rng_state(np_gen: np.random.Generator | None = None, torch_gen: torch.Generator | None = None) -> dict:
    """Every random stream of this process, as tensors and primitives."""
    np_global = np.random.get_state(legacy=False)
    np_global["state"]["key"] = torch.from_numpy(np_global["state"]["key"].astype(np.int64))  # (624,)
    return {
        "python": random.getstate(),
        "numpy": np_global,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "np_gen": np_gen.bit_generator.state if np_gen is not None else None,
        "torch_gen": torch_gen.get_state() if torch_gen is not None else None,
    }


def set_rng_state(state: dict, np_gen: np.random.Generator | None = None, torch_gen: torch.Generator | None = None):
    """The inverse of rng_state: `np_gen` and `torch_gen` are set in place."""
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    np_global = dict(state["numpy"], state=dict(state["numpy"]["state"]))
    np_global["state"]["key"] = np_global["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state(np_global)
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if np_gen is not None:
        np_gen.bit_generator.state = state["np_gen"]
    if torch_gen is not None:
        torch_gen.set_state(state["torch_gen"])


def all_rng_states(rt, np_gen=None, torch_gen=None) -> list[dict]:
    """rng_state of every rank, in rank order (a collective under torchrun: every rank must call it)."""
    mine = rng_state(np_gen, torch_gen)
    if not rt.ddp:
        return [mine]
    states = [None] * rt.world_size
    dist.all_gather_object(states, mine)
    return states


# what each stage's resume state holds besides model, model_config, tokenizer, config, step, optimizer,
# scaler and rng (see save_resume and the scripts' calls of it)
# what each stage's resume state holds besides the model, optimizer, scaler, step and random streams (PPO's
# value_model only with --estimator=gae: read_ppo_inputs checks it against the estimator)
STAGE_KEYS = {"sft": ("phase",), "rm": (), "ppo": ("kl_ctl",), "dpo": ()}


def read_resume_state(path, stage: str, world_size: int, hint: str = "") -> dict:
    """A resume state from disk, checked key by key before anything is restored from it: a damaged or foreign
    file is a DataError naming the key, never a KeyError halfway through restoring. `_where` is set to path."""
    state = load_checkpoint(path, f"{stage} resume state", hint)
    fix = "The resume state is damaged or from another program: run without --resume=True to start over"
    check_checkpoint(state, where=str(path))

    def need(key, ok, what):
        if key not in state:
            raise DataError(f"{path}: key {key!r} missing. {fix}")
        if not ok(state[key]):
            raise DataError(f"{path}: key {key!r} should be {what}, got {type(state[key]).__name__}. {fix}")

    need("tokenizer", lambda v: isinstance(v, dict), "a tokenizer identity (a dict)")
    need("config", lambda v: isinstance(v, dict), "a dict of settings")
    need("step", lambda v: type(v) is int and v >= 0, "a step number")
    need("optimizer", lambda v: isinstance(v, dict) and {"state", "param_groups"} <= set(v), "an optimizer state")
    need("scaler", lambda v: isinstance(v, dict) and all(type(x) in (int, float) for x in v.values()),
         "a loss scaler state (numbers)")
    need("rng", lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(r, dict) for r in v),
         "one random state per process")
    for key in STAGE_KEYS[stage]:
        need(key, lambda v: v is not None, "present")
    if stage == "sft":
        need("phase", lambda v: v in ("pretrain", "sft"), "'pretrain' or 'sft'")
        if state["phase"] == "sft":
            need("order", lambda v: isinstance(v, torch.Tensor) and v.dim() == 1 and not v.is_floating_point(),
                 "a 1-D integer tensor")
            need("pos", lambda v: type(v) is int and 0 <= v <= len(state["order"]), "a position in the order")
            need("val_loss0", lambda v: type(v) in (int, float), "a number")
    if stage == "ppo":
        if "value_model" in state:  # PPO with a value model (--estimator=gae); read_ppo_inputs checks which
            need("value_model", lambda v: isinstance(v, dict), "a state dict")
        need("kl_ctl", lambda v: isinstance(v, dict) and type(v.get("value")) in (int, float), "a KL controller state")
    if len(state["rng"]) != world_size:
        raise DataError(f"{path}: saved by {len(state['rng'])} process(es) but this run has {world_size}: exact "
                        "resume needs the same number of processes")
    saved = rng_state()  # a dry run of restoring each rank's random streams, then the current ones back
    try:
        for r in state["rng"]:
            set_rng_state(r, np.random.default_rng() if r.get("np_gen") is not None else None,
                          torch.Generator() if r.get("torch_gen") is not None else None)
    except Exception as e:  # KeyError, TypeError, ValueError, RuntimeError from numpy, torch or random
        raise DataError(f"{path}: key 'rng' cannot be restored ({type(e).__name__}: {str(e)[:120]}). {fix}") from None
    finally:
        set_rng_state(saved)
    state["_where"] = str(path)
    return state


RUN_CONTROL = {"resume", "stop_at", "save_interval", "device"}  # may differ between a run and its resumption


def config_changes(state: dict, config) -> list[str]:
    """The settings of `config` that differ from those the resume state was saved with ("lr: 3e-4 -> 1e-3"),
    run-control flags aside. The run then continues, but it is no longer the run that was stopped."""
    saved, now = state.get("config", {}), asdict(config)
    return [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in now
            if k in saved and k not in RUN_CONTROL and saved[k] != now[k]]


def warn_config_changes(state: dict, config, print_fn=print):
    changes = config_changes(state, config)
    if changes:
        print_fn("warning: resuming with settings that differ from the stopped run's, so the result will not "
                 "be the run that was stopped: " + "; ".join(changes))


def restore_rng(state: dict, rt, np_gen=None, torch_gen=None):
    set_rng_state(state["rng"][rt.rank], np_gen, torch_gen)


def save_resume(out_dir: str, stage: str, rt, model, tok, config, optimizer, scaler, step: int,
                np_gen=None, torch_gen=None, **extra):
    """Write out/<stage>/resume.pt: the model, optimizer, scaler, next step, every rank's random streams and
    the stage's `extra` state. A collective (the random streams are gathered): every rank calls it, rank 0
    writes, atomically."""
    rngs = all_rng_states(rt, np_gen, torch_gen)
    if rt.master:
        save_checkpoint(resume_path(out_dir, stage), model, tok, config, stage=stage, step=step,
                        optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng=rngs, **extra)


def restore_training(state: dict, rt, optimizer, scaler, np_gen=None, torch_gen=None) -> int:
    """Load the optimizer, scaler and this rank's random streams from a resume state; returns the next step."""
    where = state.get("_where", "resume state")
    try:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise DataError(f"{where}: key 'optimizer' does not fit this run's model ({type(e).__name__}: "
                        f"{str(e)[:120]}). Run without --resume=True to start over") from None
    for group in optimizer.param_groups:  # load_state_dict checks group sizes, not the moments' shapes
        for p in group["params"]:
            for name, v in optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
                    raise DataError(f"{where}: key 'optimizer' holds {name} of shape {tuple(v.shape)} for a weight "
                                    f"of shape {tuple(p.shape)}. Run without --resume=True to start over")
    restore_rng(state, rt, np_gen, torch_gen)
    return state["step"]


def remove_resume(out_dir: str, stage: str, rt):
    """A finished stage has nothing left to resume: its result is out/<stage>/model.pt."""
    if rt.master and os.path.exists(resume_path(out_dir, stage)):
        os.remove(resume_path(out_dir, stage))


class Stopper:
    """Turns Ctrl-C (SIGINT) into a flag that the training loop checks at the end of each step, so that it
    saves the resume state and exits cleanly instead of dying mid-step; --stop_at > 0 stops the same way
    once that many steps are done; every --save_interval steps the resume state is saved too. Under torchrun
    the decision is all-reduced, so that every rank stops at the same step (a rank that left alone would hang
    the others in their next all-reduce). `config` is the stage's Config (out_dir, stop_at, save_interval).

        with Stopper(config, rt, "rm", tok) as stopper:
            for step in range(start, n_steps):
                ...
                if stopper.after_step(step + 1, n_steps, model, optimizer, scaler, rng, **extra_state):
                    return  # the resume state is saved
    """

    def __init__(self, config, rt, stage: str, tok):
        self.config, self.rt, self.stage, self.tok = config, rt, stage, tok
        self.requested = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)
        return False

    def _on_sigint(self, *_):
        if self.requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing this step, saving the resume state, then exiting (Ctrl-C again to abort)",
              flush=True)

    def after_step(self, steps_done: int, n_steps: int, model, optimizer, scaler, np_gen=None, torch_gen=None,
                   offset: int = 0, **extra) -> bool:
        """Once `steps_done` of a loop's `n_steps` are done: save the resume state (save_resume: the model,
        optimizer, scaler, random streams and the stage's `extra` state) every save_interval steps and before a
        stop, and say whether to stop now; neither after the last step (the stage then finishes and writes its
        result). `offset` counts earlier phases' steps towards stop_at. A collective under torchrun."""
        if steps_done >= n_steps:
            return False
        stop = self.should_stop(offset + steps_done)
        interval = self.config.save_interval
        if stop or (interval > 0 and steps_done % interval == 0):
            save_resume(self.config.out_dir, self.stage, self.rt, model, self.tok, self.config, optimizer, scaler,
                        steps_done, np_gen, torch_gen, **extra)
        return stop

    def should_stop(self, steps_done: int) -> bool:
        stop = self.requested or (self.config.stop_at > 0 and steps_done >= self.config.stop_at)
        if self.rt.ddp:
            flag = torch.tensor([float(stop)], device=self.rt.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item() > 0)
        return stop
