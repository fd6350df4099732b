"""Sample from the trained models side by side: each model's response to a prompt, with its reward-model
score and, where a judge applies, the judge's score.

    python sample.py --prompt="Name the capital of Zorvia."      # SFT and PPO (out/sft, out/ppo) side by side
    python sample.py --models=base,sft,ppo --few_shot=3          # the base LM too, shown 3 demonstrations first
    python sample.py --prompt_file=data/eval_prompts.jsonl --num_samples=3 --temperature=1.0
    python sample.py                                             # interactive: a prompt per line until EOF
    python sample.py --models=out/sft/model.pt,other/model.pt    # explicit checkpoints

Every model sees a prompt in the one format of data.format_prompt. The base LM saw that format only in the
instruction documents of its corpus (docs/world.md) and was never fine-tuned on it, so with --few_shot=N it is
first shown N demonstrations from {data_dir}/sft_train.jsonl, each prompt + response + EOS as in SFT: then it
sees what SFT and PPO learned to write, and the side-by-side shows what they changed.

Scores: "RM" is the reward model's score (reward.reward_at_eos) of the prompt and the printed response +
EOS, re-encoded from text as the RM's comparisons are; a response cut off before EOS has no RM score.
"judge" is --judge's score: by default the world's gold labeler (world.gold_score), which only judges the
world's own prompts; --judge=module:function takes your own score(prompt, response) (minigpt_rlhf/judge.py).
The samples of a prompt depend only on the prompt, the model, the options and --seed.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

from minigpt_rlhf.checkpoint import load_checkpoint, load_model
from minigpt_rlhf.common import pick_device, run_script
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.data import DataError, encode_prompt, read_prompts, read_sft
from minigpt_rlhf.judge import is_world_prompt, load_scorer, world_scorer
from minigpt_rlhf.reward import encode_responses, score_comparisons
from minigpt_rlhf.sampling import generate
from minigpt_rlhf.tokenizer import get_tokenizer

STAGES = ("base", "sft", "ppo")


@dataclass
class Config:
    out_dir: str = "out"  # where base/, sft/, ppo/ and rm/ checkpoints are
    models: str = "sft,ppo"  # comma-separated: stage names (base, sft, ppo) or checkpoint paths
    rm: str = "auto"  # reward model checkpoint: auto ({out_dir}/rm/model.pt if it exists) | none | a path
    judge: str = "auto"  # auto (the world's gold labeler for the world's prompts) | none | module:function
    prompt: str = ""  # one prompt (the raw instruction, without the template)
    prompt_file: str = ""  # a .jsonl file of {"prompt": ...} lines, or a text file with one prompt per line
    num_samples: int = 1  # responses per prompt and model
    temperature: float = 0.7  # sampling temperature
    top_k: int = 0  # sample from the k most likely tokens only (0 = all)
    max_new_tokens: int = 48  # response length limit
    few_shot: int = 0  # the base model sees this many demonstrations before the prompt
    data_dir: str = "data"  # sft_train.jsonl, the demonstrations for --few_shot
    tokenizer: str = ""  # the checkpoints' tokenizer spec if not the one they were trained with
    device: str = "auto"  # auto | cpu | cuda | mps
    seed: int = 1337  # sampling seed


def checkpoint_path(config: Config, name: str) -> str:
    return os.path.join(config.out_dir, name, "model.pt") if name in STAGES else name


def load_models(config: Config, device) -> tuple[dict, set, object, object]:
    """The language models to compare ({label: model}), the labels of base (pretrained only) models, the
    reward model (or None) and the tokenizer, all loaded and checked before any prompt is read."""
    names = [n.strip() for n in config.models.split(",") if n.strip()]
    if not names:
        raise SystemExit("sample.py: --models is empty; give stage names (base, sft, ppo) or checkpoint paths")
    ckpts = {}
    for name in names:
        path = checkpoint_path(config, name)
        hint = f"Run `python train_{'sft' if name in ('base', 'sft') else 'ppo'}.py`." if name in STAGES else ""
        ckpts[name] = (path, load_checkpoint(path, f"{name} checkpoint", hint))
    rm_path = os.path.join(config.out_dir, "rm", "model.pt") if config.rm == "auto" else config.rm
    rm_ckpt = None
    if config.rm != "none" and (config.rm != "auto" or os.path.exists(rm_path)):
        rm_ckpt = load_checkpoint(rm_path, "reward model checkpoint", "Run `python train_rm.py`.")
    first = next(iter(ckpts.values()))[1]
    tok = get_tokenizer(config.tokenizer or first.get("config", {}).get("tokenizer", "default"))
    models, base = {}, {name for name, (_, ckpt) in ckpts.items() if ckpt.get("stage") == "base"}
    for name, (path, ckpt) in ckpts.items():
        if ckpt["model_config"].get("head") != "lm":
            raise SystemExit(f"sample.py: {path} is a reward model, not a language model: pass it as --rm={path}")
        models[name] = build(ckpt, tok, path, device)
    rm = None
    if rm_ckpt is not None:
        if rm_ckpt["model_config"].get("head") != "scalar":
            raise SystemExit(f"sample.py: --rm={rm_path} is a language model, not a reward model")
        rm = build(rm_ckpt, tok, rm_path, device)
    if config.few_shot and not base:
        raise SystemExit("sample.py: --few_shot shows demonstrations to the base model: add base to --models")
    return models, base, rm, tok


def build(ckpt: dict, tok, path: str, device):
    """The checkpoint's model in eval mode, with a clear error if it was trained with another tokenizer."""
    try:
        return load_model(ckpt, tok, path, device)
    except ValueError as e:  # the tokenizer check
        raise SystemExit(f"sample.py: {e}") from None


def make_judge(spec: str):
    """judge(prompt, response, ended) -> score or None (no judge for this prompt): --judge=none; auto, the
    world's gold labeler for the world's prompts (prompts may come one at a time, so auto decides per prompt);
    or module:function, a score function of your own (minigpt_rlhf/judge.py)."""
    if spec == "none":
        return lambda prompt, response, ended: None
    if spec == "auto":
        gold = world_scorer()
        return lambda prompt, response, ended: gold.score(prompt, response, ended) if is_world_prompt(prompt) else None
    scorer = load_scorer(spec, "judge")
    return lambda prompt, response, ended: scorer.score(prompt, response, ended)


def few_shot_prefix(config: Config, tok) -> list[int]:
    """N demonstrations drawn with --seed from sft_train.jsonl, each prompt + response + EOS, as in SFT."""
    if config.few_shot <= 0:
        return []
    rows = read_sft(os.path.join(config.data_dir, "sft_train.jsonl"))
    if config.few_shot > len(rows):
        raise SystemExit(f"sample.py: --few_shot={config.few_shot} but {config.data_dir}/sft_train.jsonl "
                         f"has {len(rows)} demonstrations")
    picks = np.random.default_rng(config.seed).choice(len(rows), config.few_shot, replace=False)
    return [i for j in picks for i in encode_responses(tok, rows[j]["prompt"], [rows[j]["response"]])[0]]


def read_prompt_source(config: Config):
    """The prompts: --prompt, --prompt_file (read and checked now), or stdin, a line at a time."""
    if config.prompt and config.prompt_file:
        raise SystemExit("sample.py: give --prompt or --prompt_file, not both")
    if config.prompt:
        return [config.prompt]
    if config.prompt_file:
        if config.prompt_file.endswith(".jsonl"):
            return [r["prompt"] for r in read_prompts(config.prompt_file)]
        if not os.path.isfile(config.prompt_file):
            raise FileNotFoundError(f"prompt file {config.prompt_file} not found")
        with open(config.prompt_file, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
        if not prompts:
            raise DataError(f"{config.prompt_file}: no prompts")
        return prompts
    return stdin_prompts()


def stdin_prompts():
    interactive = sys.stdin.isatty()
    if interactive:
        print("a prompt per line, Enter to sample, Ctrl-D to quit")
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and not line:
            return
        if line.strip():
            yield line.strip()


@torch.no_grad()
def sample_prompt(prompt: str, models: dict, base: set, rm, tok, judge, prefix: list[int], config: Config,
                  device) -> list[dict]:
    """num_samples responses of every model to one prompt, each with its RM and judge scores. The base
    models see the few-shot prefix first."""
    ids = encode_prompt(tok, prompt)
    out = []
    for name, model in models.items():
        context = prefix + ids if name in base else ids
        if len(context) + config.max_new_tokens > model.config.block_size:
            out.append({"prompt": prompt, "model": name, "error": f"prompt of {len(context)} tokens + max_new_tokens="
                        f"{config.max_new_tokens} is beyond the model's context ({model.config.block_size})"})
            continue
        g = torch.Generator(device=device).manual_seed(config.seed)
        s = generate(model, [context] * config.num_samples, config.max_new_tokens, tok.eos_id, tok.pad_id,
                     temperature=config.temperature, top_k=config.top_k or None, n_vocab=tok.n_vocab, generator=g)
        for j in range(config.num_samples):
            n, ended = int(s.response_mask[j].sum()), bool(s.ended[j])
            response_ids = s.response[j, :n].tolist()
            text = tok.decode(response_ids[:-1] if ended else response_ids)
            out.append({"prompt": prompt, "model": name, "sample": j, "response": text, "ended": ended,
                        "rm": rm_score(rm, tok, prompt, text, device) if rm is not None and ended else None,
                        "judge": judge(prompt, text, ended)})
    return out


def rm_score(rm, tok, prompt: str, response: str, device) -> float | None:
    """The RM's score of prompt + response + EOS (None if that is beyond the RM's context)."""
    encoded = encode_responses(tok, prompt, [response])
    if len(encoded[0]) > rm.config.block_size:
        return None
    return float(score_comparisons(rm, [encoded], tok.pad_id, device)[0])


def format_result(r: dict, num_samples: int) -> str:
    label = r["model"] if num_samples == 1 or "error" in r else f"{r['model']} #{r['sample'] + 1}"
    if "error" in r:
        return f"[{label}] (not sampled: {r['error']})"
    text = r["response"].replace("\n", "\n    ")
    scores = []
    if r["rm"] is not None:
        scores.append(f"RM {r['rm']:+.4f}")
    if r["judge"] is not None:
        scores.append(f"judge {r['judge']:.4f}")
    if not r["ended"]:
        scores.append("no EOS within max_new_tokens")
    return f"[{label}] {text}\n    ({', '.join(scores)})" if scores else f"[{label}] {text}"


def main(config: Config) -> list[dict]:
    for name in ("num_samples", "max_new_tokens"):
        if getattr(config, name) < 1:
            raise SystemExit(f"sample.py: --{name}={getattr(config, name)} must be at least 1")
    if config.temperature <= 0 or config.top_k < 0 or config.few_shot < 0:
        raise SystemExit("sample.py: --temperature must be > 0, --top_k and --few_shot >= 0")
    device = pick_device(config.device)
    judge = make_judge(config.judge)
    prompts = read_prompt_source(config)
    models, base, rm, tok = load_models(config, device)
    prefix = few_shot_prefix(config, tok)
    results = []
    for prompt in prompts:
        print(f"=== {prompt}", flush=True)
        for r in sample_prompt(prompt, models, base, rm, tok, judge, prefix, config, device):
            print(format_result(r, config.num_samples), flush=True)
            results.append(r)
    return results


if __name__ == "__main__":
    run_script(main, parse_config(Config))
