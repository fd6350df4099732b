"""The laboratory: PPO beside RLOO, GRPO, Dr. GRPO, DPO, best-of-n and sharpening, on one SFT model, one reward
model and one gold judge, each at several settings of its strength, compared at matched KL and training time.

    python lab.py                     # every method at 3 or more settings; out/sft and out/rm are built if missing
    python lab.py --preset=quick      # one setting per method
    python lab.py --methods=ppo,rloo,dpo --iterations=100 --snapshots=25,50,100
    python lab.py --ppo_args="--kl_coef=0.05"   # passed to every RL method's train_ppo.py

Methods (docs/methods.md has each one's formula, function and test):
- ppo, rloo, grpo, dr_grpo: `train_ppo.py --estimator=...` (gae for ppo) with one RM (no later rounds), run for
  --iterations; its settings are the policies after --snapshots iterations. Same rollout batch, KL penalty, PPO
  clipping and epochs; the critic-free ones sample --group_size responses per prompt and build no value model.
- dpo: `train_dpo.py` on the comparisons the RM was trained on; settings: the policies after --dpo_snapshots
  fractions of its steps.
- best_of_n: the SFT model's best of n samples by the RM (n in --best_of), at the KL of the best-of-n distribution
  measured from its draws (the bound log n - (n - 1)/n beside it); no training.
- sharpening: the SFT model sampled at the temperatures --temperatures (lower than the evaluation's 0.7); no
  training, no RM.
Each training run is a process of its own (its seconds per iteration and peak memory are its own). Every policy
is then judged by evaluate.compare_models against the same SFT samples of the held-out prompts: gold score,
gold win rate over SFT (95 % CI over prompts), RM score and KL(pi || SFT) per response.

Writes out/lab/results.json, the printed tables (also out/lab/report.txt) and, with matplotlib,
out/lab/frontier.png: gold score and win rate against sqrt(KL), and gold against training seconds, one curve per
method (Gao et al. 2022's axes). The training runs live in out/lab/runs/<method>/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from minigpt_rlhf.checkpoint import load_checkpoint, load_model
from minigpt_rlhf.common import compute_init, print0, run_script, write_json
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.data import DataError, encode_prompts, iter_jsonl, read_prompts, spread_subset
from minigpt_rlhf.evaluate import compare_models, rm_scores, sample_responses
from minigpt_rlhf.frontier import (
    best_of_n_exact_kl,
    best_of_n_kl,
    best_of_n_picks,
    format_lab,
    matched,
    plot_frontier,
)
from minigpt_rlhf.inputs import parse_temperatures
from minigpt_rlhf.judge import resolve_judge
from minigpt_rlhf.tokenizer import get_tokenizer

ROOT = Path(__file__).resolve().parent
RL_METHODS = {"ppo": "gae", "rloo": "rloo", "grpo": "grpo", "dr_grpo": "dr_grpo"}  # method -> --estimator
METHODS = (*RL_METHODS, "dpo", "best_of_n", "sharpening")


@dataclass
class Config:
    out_dir: str = "out"  # reads sft/ and rm/ (built if missing), writes lab/
    data_dir: str = "data"  # the data files of every stage (README: Your own data)
    methods: str = "ppo,rloo,grpo,dr_grpo,dpo,best_of_n,sharpening"  # the methods to run (comma-separated; default all)
    iterations: int = 100  # iterations of each RL method's run (plain RLHF: one RM)
    snapshots: str = "5,10,20,40,70,100"  # the RL methods' settings: their policies after these iterations
    group_size: int = 4  # samples per prompt of rloo, grpo and dr_grpo
    ppo_args: str = ""  # extra options for every RL method's train_ppo.py, e.g. "--kl_coef=0.05"
    dpo_args: str = ""  # extra options for train_dpo.py, e.g. "--beta=0.3"
    dpo_snapshots: str = "0.05,0.1,0.25,0.5,1"  # DPO's settings: its policy after these fractions of its steps
    best_of: str = "2,4,8,16"  # best-of-n's settings: n
    temperatures: str = "0.1,0.3,0.5"  # sharpening's settings: SFT's sampling temperature
    eval_temperature: float = 0.7  # the temperature every trained policy (and SFT, the reference) is sampled at
    samples_per_prompt: int = 4  # samples of each policy per held-out prompt
    max_eval_prompts: int = 0  # evaluate on at most this many held-out prompts (0 = all)
    max_new_tokens: int = 48  # response length limit of the evaluation samples (train_ppo.py's)
    no_eos_penalty: float = -2.0  # the RM's score of a response without EOS: best-of-n's picks, RM win rates (PPO's)
    kl_levels: str = "0.5,1,1.5"  # sqrt(KL) values of the matched-KL table
    time_levels: str = "20,40,80"  # training seconds of the matched-time table
    judge: str = "auto"  # auto | module:function: the judge of every policy (the world's gold labeler by default)
    tokenizer: str = "default"  # must match the checkpoints' tokenizer
    upstream_preset: str = "laptop"  # preset of train_sft.py / train_rm.py if their checkpoints are missing
    preset_of_runs: str = "laptop"  # preset of the train_ppo.py and train_dpo.py runs
    device: str = "auto"  # auto | cpu | cuda | mps, for every run and the evaluation
    seed: int = 1337  # seed of every run (the evaluation's samples have their own fixed seeds)


PRESETS = {
    "laptop": {},
    "quick": dict(iterations=30, snapshots="30", dpo_snapshots="1", best_of="4", temperatures="0.3"),
    "tiny": dict(iterations=2, snapshots="1,2", dpo_snapshots="0.5,1", best_of="2", temperatures="0.3",
                 max_eval_prompts=8, max_new_tokens=12, samples_per_prompt=2, upstream_preset="tiny",
                 preset_of_runs="tiny"),
}


def read_lab_inputs(config: Config) -> dict:
    """Every option and file the lab needs, checked before any run starts."""
    methods = [m.strip() for m in config.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise DataError(f"--methods={config.methods}: {', '.join(unknown) or 'none given'}; expected some of "
                        f"{', '.join(METHODS)}")
    snapshots = sorted({int(x) for x in config.snapshots.split(",") if x.strip()}) if config.snapshots else []
    rl = any(m in RL_METHODS for m in methods)
    if rl and (not snapshots or snapshots[0] < 1 or snapshots[-1] > config.iterations):
        raise DataError(f"--snapshots={config.snapshots}: each must be an iteration in 1..{config.iterations} "
                        "(--iterations)")
    fractions = sorted({float(x) for x in config.dpo_snapshots.split(",") if x.strip()})
    if "dpo" in methods and (not fractions or fractions[0] <= 0 or fractions[-1] > 1):
        raise DataError(f"--dpo_snapshots={config.dpo_snapshots}: fractions of DPO's steps, each in (0, 1]")
    best_of = sorted({int(x) for x in config.best_of.split(",") if x.strip()})
    if "best_of_n" in methods and (not best_of or best_of[0] < 2):
        raise DataError(f"--best_of={config.best_of}: values of n, each at least 2")
    temps = parse_temperatures(config.temperatures, "temperatures")
    kl_levels = [float(x) for x in config.kl_levels.split(",") if x.strip()]
    time_levels = [float(x) for x in config.time_levels.split(",") if x.strip()]
    tok = get_tokenizer(config.tokenizer)
    eval_path = os.path.join(config.data_dir, "eval_prompts.jsonl")
    eval_rows, _ = encode_prompts(tok, read_prompts(eval_path), 64, eval_path)
    eval_rows = spread_subset(eval_rows, config.max_eval_prompts)
    judge = resolve_judge(config.judge, [r["prompt"] for r in eval_rows])
    if judge is None:
        raise DataError("--judge=none: the laboratory compares methods by a judge; pass --judge=module:function")
    return dict(methods=methods, snapshots=snapshots, fractions=fractions, best_of=best_of, temperatures=temps,
                kl_levels=kl_levels, time_levels=time_levels, tok=tok, eval_rows=eval_rows, judge=judge)


def run(cmd: list[str], log_path: str) -> float | None:
    """Run a script as a process of its own, its output to log_path; returns its peak resident memory in MB
    (None where the OS does not say). A failed run stops the lab with the log's last lines."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if hasattr(os, "wait4"):
            _, status, usage = os.wait4(proc.pid, 0)
            code = os.waitstatus_to_exitcode(status)
            # ru_maxrss: kilobytes on Linux, bytes on macOS
            peak = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
        else:
            code, peak = proc.wait(), None
    if code != 0:
        tail = Path(log_path).read_text(errors="replace").replace("\r", "\n").strip().splitlines()[-5:]
        raise SystemExit(f"{' '.join(cmd[1:3])} failed (exit status {code}); its log {log_path} ends:\n"
                         + "\n".join(tail))
    return peak


def ensure_upstream(config: Config):
    """out/sft/model.pt and out/rm/model.pt (with its comparisons), built as train_ppo.py builds them if missing:
    train_sft.main and train_rm.main with --upstream_preset."""
    import train_ppo
    upstream = train_ppo.ensure_upstream(train_ppo.Config(
        out_dir=config.out_dir, data_dir=config.data_dir, judge=config.judge, tokenizer=config.tokenizer,
        device=config.device, seed=config.seed, upstream_preset=config.upstream_preset))
    if upstream is None:
        raise SystemExit("stopped before the laboratory started: run the same command again")


def run_dir(config: Config, method: str, files: list[str]) -> str:
    """out/lab/runs/<method>/, a fresh output root holding copies of the upstream files the run reads."""
    d = os.path.join(config.out_dir, "lab", "runs", method)
    shutil.rmtree(d, ignore_errors=True)
    for f in files:
        os.makedirs(os.path.dirname(os.path.join(d, f)), exist_ok=True)
        shutil.copy2(os.path.join(config.out_dir, f), os.path.join(d, f))
    return d


def log_rows(path: str) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path)]


def cuda_peak(rows: list[dict]) -> dict:
    """The run's peak CUDA memory in MB, if it ran on a GPU (train_ppo.py and train_dpo.py log it there)."""
    peaks = [r["cuda_peak_memory_mb"] for r in rows if "cuda_peak_memory_mb" in r]
    return {"cuda_peak_memory_mb": max(peaks)} if peaks else {}


def train_rl(config: Config, method: str, snapshots: list[int]) -> tuple[list[tuple[int, str, float]], dict]:
    """One train_ppo.py run of an RL method. Returns [(iterations, checkpoint, training seconds)] and its cost."""
    d = run_dir(config, method, ["sft/model.pt", "rm/model.pt"])
    peak = run([sys.executable, "train_ppo.py", f"--preset={config.preset_of_runs}", f"--out_dir={d}",
                f"--data_dir={config.data_dir}", f"--estimator={RL_METHODS[method]}",
                f"--group_size={config.group_size}", "--rounds=1", f"--iterations={config.iterations}",
                f"--snapshots={','.join(map(str, snapshots))}",
                "--report=False", "--few_shot=0", "--control_temperatures=", f"--tokenizer={config.tokenizer}",
                f"--device={config.device}", f"--seed={config.seed}", *config.ppo_args.split()],
               os.path.join(d, "train.log"))
    rows = [r for r in log_rows(os.path.join(d, "ppo", "log.jsonl")) if "iteration_s" in r]
    seconds = np.array([r["iteration_s"] for r in rows])  # rollout, advantages and update: no judging or logging
    points = [(it, os.path.join(d, "ppo", f"model_{it}.pt"), float(seconds[:it].sum())) for it in snapshots]
    # the first iteration also warms up (allocations, compilation): the typical one is the median
    return points, {"s_per_iteration": float(np.median(seconds)), "train_s": float(seconds.sum()),
                    "peak_memory_mb": peak, **cuda_peak(rows)}


def train_dpo(config: Config, fractions: list[float]) -> tuple[list[tuple[int, str, float]], dict]:
    """One train_dpo.py run, saving the policy after each fraction of its steps."""
    import train_dpo as script
    from minigpt_rlhf.comparisons import read_comparisons, train_and_held_out
    d = run_dir(config, "dpo", ["sft/model.pt", "rm/comparisons.jsonl"])
    cfg = parse_config(script.Config, [f"--preset={config.preset_of_runs}", *config.dpo_args.split()], script.PRESETS)
    comparisons = read_comparisons(cfg.comparisons or os.path.join(d, "rm", "comparisons.jsonl"))
    val = read_comparisons(cfg.val_comparisons) if cfg.val_comparisons else None
    # the run's own steps: the same split and batches as train_dpo.main makes them
    steps = len(script.step_batches(len(train_and_held_out(comparisons, val, cfg)[0]), cfg))
    at = sorted({max(1, round(f * steps)) for f in fractions})
    peak = run([sys.executable, "train_dpo.py", f"--preset={config.preset_of_runs}", f"--out_dir={d}",
                f"--data_dir={config.data_dir}", f"--snapshots={','.join(map(str, at))}", "--report=False",
                f"--tokenizer={config.tokenizer}", f"--device={config.device}", f"--seed={config.seed}",
                *config.dpo_args.split()], os.path.join(d, "train.log"))
    rows = [r for r in log_rows(os.path.join(d, "dpo", "log.jsonl")) if "step_s" in r]
    # training seconds as the RL methods count them: the steps themselves (and DPO's one pass of the reference
    # model over its comparisons, which PPO makes in every iteration), without evaluation or logging
    seconds = np.array([r["step_s"] for r in rows])
    seconds[0] += rows[0]["reference_s"]
    points = [(s, os.path.join(d, "dpo", f"model_{s}.pt"), float(seconds[:s].sum())) for s in at]
    return points, {"s_per_iteration": float(np.median(seconds)), "train_s": float(seconds.sum()),
                    "peak_memory_mb": peak, **cuda_peak(rows)}


def kl_coefficients(config: Config, methods: list[str]) -> dict:
    """What each method's KL coefficient means, in one unit. The RL methods' --kl_coef weighs the KL against the
    normalised RM score g * (r - b) (g: the RM's gain); DPO's --beta weighs it against Bradley-Terry logits, the
    RM's raw unit r: so PPO's coefficient in DPO's units is kl_coef / g. Of the critic-free estimators, only RLOO
    weighs the score as PPO does (ppo.effective_kl_coef; GRPO's depends on each group's std)."""
    import train_dpo as dpo_script
    import train_ppo
    from minigpt_rlhf import ppo

    rm_path = os.path.join(config.out_dir, "rm", "model.pt")
    gain = float(load_checkpoint(rm_path, "reward model checkpoint").get("reward_gain", 1.0))
    runs = f"--preset={config.preset_of_runs}"
    beta = parse_config(train_ppo.Config, [runs, *config.ppo_args.split()], train_ppo.PRESETS).kl_coef
    out = {"rm_gain": gain}
    for m in methods:
        if m in RL_METHODS:
            est = RL_METHODS[m]
            eff = ppo.effective_kl_coef(est, beta, config.group_size, group_std=1.0 if est == "grpo" else None)
            out[m] = {"kl_coef": beta, "effective_vs_rm_score": eff, "in_logit_units": eff / gain,
                      **({"per_unit_group_std": True} if est == "grpo" else {})}
        elif m == "dpo":
            b = parse_config(dpo_script.Config, [runs, *config.dpo_args.split()], dpo_script.PRESETS).beta
            out[m] = {"beta": b, "effective_vs_rm_score": b * gain, "in_logit_units": b}
    return out


class Judged:
    """compare_models of each policy against the same SFT samples of the held-out prompts."""

    def __init__(self, config: Config, inputs: dict, rt):
        self.config, self.inputs, self.rt, self.tok = config, inputs, rt, inputs["tok"]
        sft_path = os.path.join(config.out_dir, "sft", "model.pt")
        rm_path = os.path.join(config.out_dir, "rm", "model.pt")
        self.sft = load_model(load_checkpoint(sft_path, "SFT checkpoint"), self.tok, sft_path, rt.device)
        self.rm = load_model(load_checkpoint(rm_path, "reward model checkpoint"), self.tok, rm_path, rt.device)
        self.kw = dict(judge=inputs["judge"], rm=self.rm, max_new_tokens=config.max_new_tokens,
                       temperature=config.eval_temperature, samples_per_prompt=config.samples_per_prompt, seed=1,
                       no_eos_score=config.no_eos_penalty, runtime=rt)
        result, samples = compare_models({"sft": self.sft}, self.tok, inputs["eval_rows"], reference="sft",
                                         candidate="sft", **self.kw)
        self.sft_samples = samples["sft"]
        self.origin = {"method": "sft", "setting": f"T={config.eval_temperature:g}", "kl": 0.0, "sqrt_kl": 0.0,
                       "gold": result["gold_score_sft"], "win": 0.5, "win_ci95": [0.5, 0.5],
                       "rm_score": result["rm_score_sft"], "train_s": 0.0}

    def judge(self, method: str, setting: str, model=None, samples=None, temperature=None, kl=None, **extra) -> dict:
        models = {"sft": self.sft, "policy": model}
        given = {"sft": self.sft_samples, **({"policy": samples} if samples is not None else {})}
        result, _ = compare_models(models, self.tok, self.inputs["eval_rows"], reference="sft", candidate="policy",
                                   given_samples=given, temperatures={"policy": temperature} if temperature else None,
                                   **self.kw)
        kl = result["kl_from_sft"] if kl is None else kl
        row = {"method": method, "setting": setting, "kl": kl, "sqrt_kl": float(np.sqrt(max(kl, 0.0))),
               "gold": result["gold_score_policy"], "win": result["win_rate_vs_sft"],
               "win_ci95": result["win_rate_ci95"], "rm_score": result["rm_score_policy"],
               "gold_by_family": result["gold_score_by_family_policy"], **extra}
        print0(f"{method:>10} {setting:>8}: gold {row['gold']:.3f}, win over SFT {row['win']:.3f}, "
               f"sqrt(KL) {row['sqrt_kl']:.2f}")
        return row

    def policy(self, path: str):
        return load_model(load_checkpoint(path, "policy checkpoint"), self.tok, path, self.rt.device)


def best_of_n_kl_measured(draws: list[list[dict]], scores: np.ndarray, samples_per_prompt: int, n: int) -> float:
    """KL(best-of-n || SFT) per response, mean over the prompts: for each prompt, frontier.best_of_n_exact_kl of the
    distribution its draws sample (all draws of all its samples pooled; a response is its text and whether it
    ended), not the bound log n - (n - 1)/n, which SFT's repeated answers keep it well below."""
    n_slots = len(draws[0])
    kls = []
    for start in range(0, n_slots, samples_per_prompt):
        slots = range(start, start + samples_per_prompt)
        responses = [(d[i]["response"], d[i]["ended"]) for d in draws for i in slots]
        kls.append(best_of_n_exact_kl(responses, [float(scores[i, j]) for j in range(len(draws)) for i in slots], n))
    return float(np.mean(kls))


def best_of_n(judged: Judged, ns: list[int]) -> tuple[list[dict], dict]:
    """Best-of-n by the RM for each n in ns, from max(ns) SFT draws per evaluation sample (each n uses the first
    n); a response without EOS scores PPO's no-EOS penalty. Its KL is measured from the draws
    (best_of_n_kl_measured), with the bound beside it. Its cost: the seconds of sampling and scoring the draws,
    per n (no training)."""
    config, tok = judged.config, judged.tok
    expanded = [r for r in judged.inputs["eval_rows"] for _ in range(config.samples_per_prompt)]
    t0 = time.time()
    draws = [sample_responses(judged.sft, tok, expanded, config.max_new_tokens, config.eval_temperature,
                              seed=100 + j, runtime=judged.rt) for j in range(max(ns))]
    scores = np.array([[config.no_eos_penalty if x is None else x for x in rm_scores(judged.rm, tok, d)]
                       for d in draws]).T
    per_draw = (time.time() - t0) / max(ns)
    spp = config.samples_per_prompt
    rows = [judged.judge("best_of_n", f"n={n}", samples=best_of_n_picks(draws, scores, n),
                         kl=best_of_n_kl_measured(draws, scores, spp, n), kl_bound=best_of_n_kl(n),
                         inference_s=per_draw * n) for n in ns]
    return rows, {"s_per_iteration": None, "train_s": 0.0, "peak_memory_mb": None,
                  "inference_s_per_draw": per_draw}


def main(config: Config) -> dict:
    t0 = time.time()
    inputs = read_lab_inputs(config)
    ensure_upstream(config)
    methods, rows, cost = inputs["methods"], [], {}
    trained = {}
    for m in methods:  # the training runs first, one process each, one after another
        if m in RL_METHODS:
            print0(f"lab: training {m} ({config.iterations} iterations)")
            trained[m], cost[m] = train_rl(config, m, inputs["snapshots"])
        elif m == "dpo":
            print0("lab: training dpo")
            trained[m], cost[m] = train_dpo(config, inputs["fractions"])
    rt = compute_init(config.device, "auto", config.seed)
    torch.manual_seed(config.seed)
    judged = Judged(config, inputs, rt)
    for m in methods:
        if m in trained:
            unit = "it" if m in RL_METHODS else "step"
            for n, path, seconds in trained[m]:
                rows.append(judged.judge(m, f"{unit}={n}", model=judged.policy(path), train_s=seconds))
        elif m == "best_of_n":
            bon, cost[m] = best_of_n(judged, inputs["best_of"])
            rows += bon
        elif m == "sharpening":
            for t in inputs["temperatures"]:
                rows.append(judged.judge("sharpening", f"T={t:g}", model=judged.sft, temperature=t))
            cost[m] = {"s_per_iteration": None, "train_s": 0.0, "peak_memory_mb": None}
    trainable = [m for m in methods if m in trained]
    results = {"methods": methods, "sft": judged.origin, "rows": rows, "cost": cost,
               "levels_sqrt_kl": inputs["kl_levels"], "levels_train_s": inputs["time_levels"],
               "matched_sqrt_kl": matched(rows, methods, "sqrt_kl", inputs["kl_levels"], ("gold", "win"),
                                          judged.origin),
               "matched_train_s": matched(rows, trainable, "train_s", inputs["time_levels"], ("gold", "win"),
                                          judged.origin),
               "kl_coefficients": kl_coefficients(config, methods),
               "n_eval_prompts": len(inputs["eval_rows"]), "samples_per_prompt": config.samples_per_prompt,
               "config": asdict(config)}
    results["wall_time_s"] = time.time() - t0
    text = format_lab(results) + f"\nwall time {results['wall_time_s']:.0f}s"
    print(text)
    lab = os.path.join(config.out_dir, "lab")
    write_json(os.path.join(lab, "results.json"), results)
    Path(lab, "report.txt").write_text(text + "\n")
    if plot_frontier(results, os.path.join(lab, "frontier.png")):
        print(f"wrote {lab}/results.json, report.txt and frontier.png")
    else:
        print(f"wrote {lab}/results.json and report.txt (pip install matplotlib for frontier.png)")
    return results


if __name__ == "__main__":
    run_script(main, parse_config(Config, presets=PRESETS))
