"""The CUDA path, checked in one run on one GPU: tests, training throughput with MFU, one PPO iteration of the
gpu preset, and the laptop default pipeline. Run it through bench/gpu_check.sh:

    bash bench/gpu_check.sh                    # every step; the report goes to $OUT/gpu_check.md
    bash bench/gpu_check.sh --dry_run          # the same steps at tiny sizes on the CPU (tests/test_gpu_check.py)
    bash bench/gpu_check.sh --only=sft,ppo     # some steps only

Steps, in this order, each a subprocess under its own time limit so that the whole run ends within
--time_limit (470 s by default; a step may also use what earlier steps left unused):

  tests     the CUDA-marked tests, tests/test_cuda.py: bf16 vs fp32 logits, compiled vs eager forward and
            training step, the KV cache under bf16, fused vs foreach AdamW, the PPO ratio under --compile
  sft       bench/bench_train.py --stages on train_sft.py's gpu preset (GPT-2-small shape, 12 x 768, context
            256), bf16 autocast, eager and compiled: its SFT step (64 demonstrations, batches grouped by
            length) and its pretraining step (64 corpus windows of 256 tokens), tokens/s and MFU
  ppo       bench/bench_ppo.py: one iteration of train_ppo.py's gpu preset (512 rollouts of up to 64 tokens,
            4 epochs of minibatches of 64) on GPT-2-small-shaped models, compiled as train_ppo.py compiles
            on CUDA, split into generation / scoring / update, after one warm-up (compilation) iteration
  pipeline  `python train_ppo.py`, the laptop default pipeline (pretraining, SFT, comparisons, RM, PPO,
            evaluation) on the GPU with its defaults (bf16, compile on): wall time and its figures

MFU (model FLOPs utilisation) = tokens/s x FLOPs per token / peak FLOP/s, with FLOPs per token of training
= 6N + 12 L T d (Chowdhery et al. 2022, PaLM, appendix B: 6 per weight for the forward and backward matmuls,
plus attention's QK^T and AV; N counts the weights but the position embedding, L layers, T tokens of
context, d the width) and the peak dense bf16 rate of the GPU from bench_train.PEAK_FLOPS (H100 and H200:
989 TFLOP/s). Tokens are the positions of the padded batches.

Everything each step prints, and every figure, goes into one file, gpu_check.md, in $OUT (or --out); the
last line printed is a one-line summary of what was measured: the tests' tally; tokens/s and MFU of the
compiled SFT and pretraining steps of the gpu preset and their compiled / eager ratio; the time of one PPO
iteration of the gpu preset and the shares of generation, scoring and update in it; the laptop pipeline's
wall time and win rate.

--stall=STEP (with --dry_run only) replaces that step's command by one that prints a line and then sleeps
for an hour, so that the step runs past its time limit: a check that such a step is stopped, with the
processes it started, and that its output is kept in the report (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("tests", "sft", "ppo", "pipeline")
SHARE_S = {"tests": 80, "sft": 120, "ppo": 120, "pipeline": 150}  # planned seconds of each step, 470 in all
STALL_LINE = "gpu_check: stalling on purpose (--stall)"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry_run", action="store_true",
                   help="tiny sizes on the CPU, torch.compile's wrapper without compiling: checks the script itself")
    p.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps, from {', '.join(STEPS)}")
    p.add_argument("--out", default=os.environ.get("OUT", ""),
                   help="folder of the report gpu_check.md (default: $OUT, else out/gpu_check)")
    p.add_argument("--time_limit", type=float, default=sum(SHARE_S.values()), help="seconds for all steps together")
    p.add_argument("--stall", default="", metavar="STEP",
                   help="with --dry_run: STEP prints one line and sleeps an hour instead of running, so that it "
                        "overruns its time limit (checks that an overrunning step is stopped and its output kept)")
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(STEPS)
    if unknown:
        p.error(f"--only: unknown step(s) {sorted(unknown)}; choose from {', '.join(STEPS)}")
    if args.stall and (not args.dry_run or args.stall not in STEPS):
        p.error(f"--stall needs --dry_run and one step, from {', '.join(STEPS)}")
    args.out = Path(args.out or ROOT / "out" / "gpu_check")
    return args


def preflight(dry_run: bool) -> str:
    """Stop before any work, saying why, if a package is missing or (unless dry) there is no CUDA GPU.
    Returns a line describing the machine."""
    missing = [m for m in ("torch", "numpy", "tiktoken", "tqdm", "pytest") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"gpu_check: {sys.executable} cannot import {', '.join(missing)}; install the project "
                         "first (pip install -e \".[test]\") or set PYTHON to an interpreter that has them")
    import torch

    if dry_run:
        return f"dry run on the CPU; torch {torch.__version__}"
    if not torch.cuda.is_available():
        raise SystemExit(f"gpu_check: no CUDA GPU is visible to torch {torch.__version__} (CUDA build: "
                         f"{torch.version.cuda or 'none'}), so there is nothing to check; "
                         "`bash bench/gpu_check.sh --dry_run` tries the script on the CPU")
    props = torch.cuda.get_device_properties(0)
    return (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}, "
            f"{props.multi_processor_count} SMs; torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"{torch.cuda.device_count()} GPU(s) visible, {os.cpu_count()} CPU cores")


def commands(step: str, work: Path, dry_run: bool, stall: str = "") -> list[str]:
    py = sys.executable
    if step == stall:
        return [py, "-c", f"print({STALL_LINE!r}, flush=True); import time; time.sleep(3600)"]
    if step == "tests":
        cmd = [py, "-m", "pytest", "-q", "-rs", "-s", "-p", "no:cacheprovider", "-m", "cuda", "tests/test_cuda.py"]
        return cmd + ["--collect-only"] if dry_run else cmd
    if step == "sft":
        sizes = (["--preset=tiny", "--device=cpu", "--batch=8", "--pretrain_batch=4", "--steps=1", "--repeats=1",
                  "--warmup=0"] if dry_run else
                 ["--preset=gpu", "--device=cuda", "--batch=64", "--pretrain_batch=64", "--steps=5", "--repeats=3",
                  "--warmup=2", "--threads=8"])
        return [py, "bench/bench_train.py", "--stages", "--only=sft_grouped,pretrain", *sizes,
                f"--json={work / 'sft.json'}"]
    if step == "ppo":
        sizes = ["--preset=tiny", "--device=cpu"] if dry_run else ["--preset=gpu", "--device=cuda", "--threads=8"]
        (work / "no_checkpoints").mkdir(exist_ok=True)  # random models of the preset's shape
        return [py, "bench/bench_ppo.py", *sizes, "--compile=True", "--iterations=1",
                f"--out_dir={work / 'no_checkpoints'}", f"--json={work / 'ppo.json'}"]
    if step == "pipeline":
        return [py, "train_ppo.py", f"--out_dir={work / 'pipeline'}"] + (
            ["--preset=tiny", "--device=cpu", "--iterations=1", "--max_eval_prompts=4"] if dry_run else [])
    raise ValueError(step)


def run(cmd: list[str], limit_s: float, env: dict) -> tuple[int | None, str, float]:
    """Run cmd from the repository root, echoing its output; stop it (and the processes it started, such as
    torch.compile's workers) after limit_s. Returns (exit status or None if stopped, output, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)
    lines = []

    def pump():
        for line in proc.stdout:
            lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=max(limit_s, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    reader.join(timeout=10)
    # progress bars redraw one line with carriage returns: keep what each line showed last
    out = "".join(line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\n") else line for line in lines)
    return code, out, time.perf_counter() - t0


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def figures_of(step: str, work: Path, output: str) -> dict:
    """The figures a step produced: from the JSON files it wrote, or from its output (pytest's tally)."""
    if step == "tests":
        tally = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output)}
        collected = re.search(r"(\d+) tests? collected", output)
        if collected:
            tally["collected"] = int(collected.group(1))
        ratio = re.search(r"ratio mean ([\d.]+), approx KL ([-\d.e+]+)", output)
        if ratio:
            tally["compiled_first_ratio_mean"], tally["compiled_first_approx_kl"] = map(float, ratio.groups())
        return tally
    if step == "sft":
        return read_json(work / "sft.json") or {}
    if step == "ppo":
        return read_json(work / "ppo.json") or {}
    if step == "pipeline":
        stages = {s: read_json(work / "pipeline" / s / "eval.json") for s in ("sft", "rm", "ppo")}
        out = {}
        for stage, ev in stages.items():
            if ev:
                out[stage] = {k: v for k, v in ev.items() if not isinstance(v, (dict, list)) or k == "win_rate_ci95"}
        return out
    raise ValueError(step)


def summary(machine: str, results: dict, total_s: float) -> str:
    """One line of what each step measured: the tests' tally; the SFT and pretraining steps' tokens/s and MFU,
    compiled, and their compiled / eager ratio; a PPO iteration's seconds and the shares of generation, scoring
    and update; the laptop pipeline's seconds, win rate and gold scores; then which steps failed, if any."""
    parts = [machine.split(";")[0]]
    t = results.get("tests")
    if t:
        tally = t["figures"]
        parts.append(f"tests: {tally.get('passed', 0)} passed, {tally.get('failed', 0)} failed, "
                     f"{tally.get('skipped', 0)} skipped" + ("" if t["ok"] else f" ({t['status']})"))
    s = results.get("sft")
    if s:
        rows = {(r["stage"], r["mode"]): r for r in s["figures"].get("rows", [])}
        bits = []
        for stage, name in (("sft_grouped", "SFT step"), ("pretrain", "pretraining step")):
            c, e = rows.get((stage, "compiled")), rows.get((stage, "eager"))
            if c:
                mfu = f"MFU {c['mfu']:.1%}" if c["mfu"] is not None else "MFU -"
                bits.append(f"{name} {c['tokens_per_s'] / 1e3:.0f}k tok/s compiled, {mfu}")
            if c and e:
                bits.append(f"compiled {c['tokens_per_s'] / e['tokens_per_s']:.2f}x eager")
        parts.append("; ".join(bits) or f"sft: no figures ({s['status']})")
    p = results.get("ppo")
    if p:
        cut = p["figures"].get("cut")
        if cut:
            med, total = cut["median_s"], cut["iteration_s"]
            parts.append(f"PPO iteration {total:.2f} s: generation {cut['generation_share']:.0%}, scoring "
                         f"{cut['scoring_s'] / total:.0%}, update {med['update'] / total:.0%}; first ratio "
                         f"{p['figures']['first_ratio_mean']:.6f}")
        else:
            parts.append(f"ppo: no figures ({p['status']})")
    q = results.get("pipeline")
    if q:
        ppo = q["figures"].get("ppo")
        if ppo:
            parts.append(f"laptop pipeline {q['seconds']:.0f} s: win rate {ppo['win_rate_vs_sft']:.3f}, gold "
                         f"{ppo['gold_score_sft']:.3f} -> {ppo['gold_score_ppo']:.3f}")
        else:
            parts.append(f"pipeline: no figures ({q['status']})")
    # past torch._dynamo's recompile limit a function runs eagerly from then on, silently but for a warning
    limited = [k for k, v in results.items() if re.search(r"recompile_limit|cache_size_limit", v["output"])]
    if limited:
        parts.append(f"torch.compile's recompile limit was hit in: {', '.join(limited)}")
    failed = [k for k, v in results.items() if not v["ok"]]
    parts.append(f"{total_s:.0f} s in all" + (f"; FAILED: {', '.join(failed)}" if failed else "; every step ran"))
    return "gpu_check: " + " | ".join(parts)


def write_report(path: Path, machine: str, results: dict, line: str | None):
    """The one file every figure goes to: summary, figures as JSON, then each step's command and output."""
    text = [f"# gpu_check\n\n{machine}\n"]
    if line:
        text.append(f"\n{line}\n")
    figures = {k: dict(status=v["status"], seconds=round(v["seconds"], 1), **v["figures"]) for k, v in results.items()}
    text.append("\n## figures\n\n```json\n" + json.dumps(figures, indent=2) + "\n```\n")
    for step, r in results.items():
        text.append(f"\n## {step}: {r['status']}, {r['seconds']:.0f} s\n\n`{' '.join(r['cmd'])}`\n\n```\n"
                    f"{r['output'].rstrip()}\n```\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(text))
    os.replace(tmp, path)


def main(args) -> int:
    machine = preflight(args.dry_run)
    print(f"gpu_check: {machine}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    report = args.out / "gpu_check.md"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PYTHONUNBUFFERED="1", TQDM_MININTERVAL="10")  # a progress line every 10 s, not every 0.1 s
    env.pop("MINIGPT_TEST_DEVICE", None)  # the CUDA-marked tests run on the GPU
    if args.dry_run:  # torch.compile returns its wrapper but runs eagerly: no minutes of CPU compilation
        env["TORCH_COMPILE_DISABLE"] = "1"
    steps = [s for s in STEPS if s in args.only.split(",")]
    t0 = time.perf_counter()
    results = {}
    for i, step in enumerate(steps):
        later = sum(SHARE_S[s] for s in steps[i + 1:]) * args.time_limit / sum(SHARE_S[s] for s in steps)
        limit = args.time_limit - (time.perf_counter() - t0) - later
        cmd = commands(step, work, args.dry_run, args.stall)
        print(f"\n=== gpu_check {step} (at most {limit:.0f} s): {' '.join(cmd)}", flush=True)
        code, output, seconds = run(cmd, limit, env)
        status = "ok" if code == 0 else f"stopped at its time limit of {limit:.0f} s" if code is None else \
            f"exit status {code}"
        results[step] = dict(cmd=cmd, ok=code == 0, status=status, seconds=seconds, output=output,
                             figures=figures_of(step, work, output))
        write_report(report, machine, results, None)  # after every step: a run cut short keeps what it measured
    line = summary(machine, results, time.perf_counter() - t0)
    write_report(report, machine, results, line)
    print(f"\nreport: {report} (work files in {work})")
    print(line, flush=True)
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
