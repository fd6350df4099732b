"""Device, precision and process setup in one place, so that no training loop sprinkles them around.

`compute_init` reads torchrun's RANK / LOCAL_RANK / WORLD_SIZE: one process on the laptop, several
under `torchrun --nproc_per_node=N` (gloo on CPU, NCCL on CUDA). Only rank 0 prints and writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class Runtime:
    device: torch.device
    ddp: bool
    rank: int
    local_rank: int
    world_size: int
    dtype: torch.dtype  # autocast dtype for matmuls (float32 = no autocast)

    @property
    def master(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """bf16 autocast on GPUs that support it, fp16 otherwise (with a GradScaler), fp32 on CPU."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def compute_init(device: str = "auto", dtype: str = "auto", seed: int = 1337) -> Runtime:
    ddp = int(os.environ.get("RANK", -1)) != -1 and int(os.environ.get("WORLD_SIZE", 1)) > 1
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    dev = pick_device(device)
    if ddp:
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls on Ampere and newer
        torch.backends.cudnn.allow_tf32 = True
    set_seed(seed + rank)  # a different stream per rank: each rank samples its own data and rollouts
    return Runtime(dev, ddp, rank, local_rank, world_size, pick_dtype(dev, dtype))


def compute_cleanup():
    """End a torchrun process group cleanly: every rank waits here until all have finished (rank 0 may
    still be writing a checkpoint when the others are done), then the group is destroyed on all ranks
    together. (Without the barrier, CI once saw rank 1 abort in its teardown while rank 0 was still
    writing the checkpoint of a `--stop_at` run.)"""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_script(main, config):
    """A script's entry point: run main(config). A problem with an input the user gave (data.DataError: a
    data file, tokenizer, checkpoint or option) or with the file system (OSError: a missing file, no
    permission, a full disk) stops it with one line, `error: <file>:<line or key>: <what>. <fix>`, and exit
    status 1, not a traceback; a bug in the project itself still shows its traceback. Under torchrun the
    process group is destroyed after a normal finish only: after an error the other ranks may be blocked in
    a collective, and a barrier would hang (torchrun stops them instead)."""
    from .data import DataError

    try:
        main(config)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:
        message = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
        if isinstance(e, FileNotFoundError):  # relative paths are resolved from here
            message += f" (working directory: {os.getcwd()})"
        raise SystemExit(f"error: {message}") from None
    compute_cleanup()


def barrier():
    """Wait for every rank (a no-op in a single process): e.g. until rank 0 has written a checkpoint."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def set_seed(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def print0(*args, **kwargs):
    if int(os.environ.get("RANK", 0)) == 0:
        print(*args, **kwargs, flush=True)


def all_reduce_mean(x: float, runtime: Runtime) -> float:
    """Mean of a scalar over all ranks (the value itself when not distributed)."""
    if not runtime.ddp:
        return float(x)
    t = torch.tensor([float(x)], device=runtime.device)
    dist.all_reduce(t)
    return float(t) / runtime.world_size


def all_reduce_means(metrics: dict[str, float], runtime: Runtime) -> dict[str, float]:
    """Each value's mean over all ranks, in one all-reduce (the dict itself when not distributed)."""
    if not runtime.ddp:
        return {k: float(v) for k, v in metrics.items()}
    t = torch.tensor([float(v) for v in metrics.values()], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(t)
    return {k: float(v) / runtime.world_size for k, v in zip(metrics, t.tolist())}


def check_finite(loss, stage: str, at: str, runtime: Runtime | None = None):
    """Stop the run with a clear message if the loss is inf or nan, before it reaches the weights (the last saved
    checkpoint stays as it was). With a distributed `runtime` the decision is all-reduced, so that every rank
    stops together (a rank that left alone would hang the others in their next all-reduce)."""
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    finite = math.isfinite(value)
    if runtime is not None:
        finite = all_reduce_mean(float(finite), runtime) == 1.0
    if not finite:
        became = value if not math.isfinite(value) else "non-finite on another rank"
        from .data import DataError  # an option the user can change: run_script prints it as one line

        raise DataError(f"{stage}: loss became {became} {at}; stopping (the last saved checkpoint is left as it "
                        "was). Try a lower learning rate (--lr)")


def cosine_lr(step: int, max_steps: int, lr: float, warmup_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio * lr (InstructGPT's SFT used cosine decay)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float):
    for group in optimizer.param_groups:
        group["lr"] = lr


class JSONLLogger:
    """Appends one JSON object per line; only rank 0 writes."""

    def __init__(self, path, enabled: bool = True, resume_step: int | None = None):
        """A new log, or with resume_step, the existing log cut back to the lines of steps before it (a
        resumed run appends from there, so the log reads as one uninterrupted run)."""
        self.path = path
        self.enabled = enabled
        if enabled:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            keep = []
            if resume_step is not None and os.path.isfile(path):
                with open(path, encoding="utf-8", errors="replace") as f:
                    rows = [_log_row(line) for line in f]
                keep = [r for r in rows if r is not None and r.get("step", r.get("iteration", 0)) < resume_step]
            with open(path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in keep)

    def log(self, **metrics):
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(metrics) + "\n")


def _log_row(line: str) -> dict | None:
    """A line of a log as a dict, or None for one that is not a JSON object with a numeric step: the last line of
    a run that was killed while writing it, or a damaged one (the resumed run logs those steps again)."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    ok = isinstance(row, dict) and type(row.get("step", row.get("iteration", 0))) in (int, float)
    return row if ok else None


def write_json(path, obj):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def maybe_compile(model: torch.nn.Module, setting: str, runtime: Runtime) -> torch.nn.Module:
    """torch.compile(model) when `setting` is "True", or "auto" on CUDA; else the model itself. The compiled
    module shares the model's parameters: train through it, but sample with and save the model itself
    (checkpoint.unwrap), so that no checkpoint holds `_orig_mod.` keys."""
    use = runtime.device.type == "cuda" if setting == "auto" else str(setting).lower() == "true"
    return torch.compile(model) if use else model


def make_scaler(runtime: Runtime) -> torch.amp.GradScaler:
    """A loss scaler for fp16 autocast (bf16 and fp32 need none: then every call below passes through).
    fp16's narrow exponent range underflows small gradients unless the loss is scaled up first."""
    return torch.amp.GradScaler(runtime.device.type, enabled=runtime.dtype == torch.float16)


def clip_and_step(optimizer, scaler, params, grad_clip: float, groups: list | None = None) -> torch.Tensor:
    """Unscale (fp16), clip the global gradient norm, step (skipped by the scaler if a gradient is inf/nan),
    then zero the gradients. Call after `scaler.scale(loss).backward()`. Returns the pre-clip norm.
    groups: lists of parameters whose norms are clipped each on its own instead (PPO's policy and value
    networks: one network's large gradient then does not shrink the other's step)."""
    scaler.unscale_(optimizer)
    if groups:
        norms = [torch.nn.utils.clip_grad_norm_(g, grad_clip) for g in groups]
        norm = torch.linalg.vector_norm(torch.stack(norms))
    else:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return norm


def gather_shards(items: list, runtime: Runtime) -> list:
    """Sharded work, gathered: rank r computed items for positions r, r + W, r + 2W, ... of a list
    (W = world size); every rank gets the whole list back in its original order."""
    if not runtime.ddp:
        return items
    parts = [None] * runtime.world_size
    dist.all_gather_object(parts, items)
    out = [None] * sum(len(p) for p in parts)
    for r, part in enumerate(parts):
        out[r:: runtime.world_size] = part
    return out


def all_reduce_grads(params, runtime: Runtime):
    """Average gradients over ranks by hand. PPO runs several forward passes (policy, value, ptx) before one
    backward, which DDP's bucketed hooks do not expect; one explicit all-reduce per step is simpler."""
    if not runtime.ddp:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(runtime.world_size)


def digest(obj) -> str:
    """A SHA-256 of JSON-able data and tensors (a state_dict's values, bit for bit): what check_ranks_agree
    compares."""
    import hashlib

    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(repr(k).encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                feed(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    feed(obj)
    return h.hexdigest()


def check_ranks_agree(obj, what: str, runtime: Runtime):
    """Stop with a clear error if `obj` (data or tensors) differs between ranks, where every rank must hold the
    same: e.g. an RLHF round's comparisons and the RM trained on them. Ranks that disagree would otherwise pair
    the wrong responses, or take different numbers of steps and wait forever in an all-reduce. A no-op in one
    process."""
    if not runtime.ddp:
        return
    digests = [None] * runtime.world_size
    dist.all_gather_object(digests, digest(obj))
    if len(set(digests)) > 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise RuntimeError(f"{what} differ between ranks (rank 0 and rank(s) {differ}): everything they hold must "
                           "be drawn from a generator that is the same on every rank")
