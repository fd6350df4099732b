"""Step 3 of InstructGPT: PPO (and PPO-ptx) against the reward model. The main job.

    python train_ppo.py                        # the whole pipeline on the laptop default
    python train_ppo.py --ptx_coef=1           # PPO-ptx: add the pretraining-loss mix (off by default, README)
    python train_ppo.py --resume=True          # continue after Ctrl-C (or an upstream stage stopped midway)
    python train_ppo.py --rounds=1 --iterations=35  # plain RLHF: one RM, trained once (the default iterates 5 rounds)
    python train_ppo.py --iterations=50 --kl_target=6
    python train_ppo.py --estimator=rloo           # critic-free: RLOO's baseline, no value model (docs/methods.md)
    python train_ppo.py --data_dir=my_data --judge=my_judge.py:score   # your own data and judge (README)
    torchrun --nproc_per_node=2 train_ppo.py

If out/sft/model.pt or out/rm/model.pt is missing, train_sft.py / train_rm.py are run first (it says so).

Objective (Ouyang et al. 2022, eq. 2), maximised:
    E_{(x,y)~pi_RL} [ r_theta(x, y) - beta * log(pi_RL(y|x) / pi_SFT(y|x)) ] + gamma * E_{x~D_pretrain} [ log pi_RL(x) ]
in its per-token form (Ziegler et al. 2019): r_t = -beta * kl_t, plus the RM score on the EOS token;
GAE (gamma 1, lambda 0.95); whitened advantages; PPO clipped surrogate and clipped value loss; several
PPO epochs of minibatches per batch of rollouts; the next-token loss on the pretraining corpus scaled by
ptx_coef (PPO-ptx). Policy and reference start from SFT; the value function starts from the RM. Steps 2 and 3
are iterated (Ouyang et al. 2022, sec. 3.1): the iterations are split into --rounds rounds, and before each
round after the first the policy's own samples are ranked and the RM trains on them (minigpt_rlhf/iterated.py).
--estimator=rloo|grpo|dr_grpo replaces the value model and GAE with a baseline from --group_size samples of the
same prompt (ppo.critic_free_advantages); the KL stays where it is for every estimator, the per-token k1 penalty
in the reward, and only the score is baselined, so the KL's weight against the score differs by estimator
(ppo.effective_kl_coef; docs/methods.md, section 1); no value model is built.

Departures from the paper: tiny scale; several PPO epochs per batch (as lm-human-preferences, where the
paper used 1); the ptx coefficient defaults to 0 (plain PPO), chosen by measurement rather than the
paper's 27.8, which multiplies a loss over far more pretraining tokens per step than RL tokens: SFT already
mixes the corpus loss into its steps, so plain PPO's corpus loss rises little, and PPO-ptx's win rate lies
within plain PPO's interval (docs/defaults_archive.md, "PPO-ptx").
Writes out/ppo/model.pt, out/ppo/log.jsonl, out/ppo/eval.json (PPO compared on held-out prompts with SFT, with
SFT at its best temperature, the sharpening control, with the base model prompted few-shot and with its own
first round, by RM score and KL, and with a judge, minigpt_rlhf/judge.py, the world's gold labeler by default,
by its scores) and
out/ppo/overoptimization.json (with matplotlib also .png: the rollouts' gold and RM scores against sqrt(KL)).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from minigpt_rlhf import ppo
from minigpt_rlhf.checkpoint import (
    base_checkpoint_path,
    check_checkpoint,
    load_checkpoint,
    load_model,
    save_checkpoint,
    unwrap,
)
from minigpt_rlhf.common import (
    JSONLLogger,
    all_reduce_grads,
    all_reduce_means,
    barrier,
    check_finite,
    clip_and_step,
    compute_init,
    make_scaler,
    maybe_compile,
    print0,
    run_script,
    set_lr,
    write_json,
)
from minigpt_rlhf.comparisons import write_comparisons
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.data import DataError, few_shot_prompt
from minigpt_rlhf.evaluate import best_temperature, compare_models, demonstration_scores, format_comparison
from minigpt_rlhf.inputs import read_ppo_inputs, read_resume, read_round_inputs
from minigpt_rlhf.iterated import IteratedRLHF
from minigpt_rlhf.losses import lm_loss
from minigpt_rlhf.model import configure_optimizer
from minigpt_rlhf.plot import overoptimization_data, plot_overoptimization
from minigpt_rlhf.resume import Stopper, remove_resume, restore_training, resume_path
from minigpt_rlhf.rollout import (
    compute_advantages,
    decode_responses,
    entropy,
    make_rollout,
    policy_logprobs,
    value_estimates,
)
from minigpt_rlhf.sampling import banned_token_ids


@dataclass
class Config:
    out_dir: str = "out"  # output root: reads sft/ and rm/, writes ppo/
    data_dir: str = "data"  # folder of the files below, by their default names (README: Your own data)
    ppo_prompts: str = ""  # prompts {"prompt"} to sample rollouts from (default {data_dir}/ppo_prompts.jsonl)
    eval_prompts: str = ""  # held-out prompts of the final comparison (default {data_dir}/eval_prompts.jsonl)
    corpus: str = ""  # pretraining corpus (default {data_dir}/corpus_train.txt; needed for ptx_coef > 0)
    corpus_val: str = ""  # held-out corpus for the pretraining loss (default {data_dir}/corpus_val.txt, if it exists)
    sft_train: str = ""  # demonstrations for the base model's few-shot prompt (default {data_dir}/sft_train.jsonl)
    judge: str = "auto"  # auto | none | module:function: scores responses, for logging and evaluation only (judge.py)
    tokenizer: str = "default"  # must match the checkpoints' tokenizer
    upstream_preset: str = "laptop"  # preset for train_sft.py / train_rm.py if their checkpoints are missing
    # rollouts
    iterations: int = 100  # PPO iterations (rollout batch + update), over all rounds
    rollout_batch_size: int = 64  # prompts sampled per iteration (over all ranks)
    max_new_tokens: int = 48  # response length limit
    max_prompt_len: int = 64  # longer prompts are skipped (and counted)
    temperature: float = 0.7  # sampling temperature of rollouts (and the distribution that is scored)
    no_eos_penalty: float = -2.0  # score of a response that does not emit EOS, instead of the RM score
    # rewards and advantages
    kl_coef: float = 0.1  # beta: initial KL penalty coefficient (paper: 0.02)
    kl_target: float = 0.0  # > 0 turns on the adaptive KL controller (Ziegler et al.) with this target
    kl_horizon: int = 10000  # adaptive controller's horizon in episodes (10000 moves beta little in a laptop run)
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE lambda
    estimator: str = "gae"  # gae (PPO with a value model) | rloo | grpo | dr_grpo (critic-free: no value model)
    group_size: int = 4  # rloo/grpo/dr_grpo: samples per prompt in a rollout batch, the group of the baseline
    # update
    ppo_epochs: int = 4  # passes over each rollout batch
    minibatch_size: int = 16  # rollouts per gradient step
    lr: float = 2e-5  # AdamW learning rate (policy and value)
    anneal_lr: bool = False  # decay the learning rate linearly to 0 over the iterations (lm-human-preferences)
    adam_eps: float = 1e-8  # AdamW epsilon (1e-8 vs TensorFlow's changed early approx-KL ~6x: Huang et al. 2024)
    clip_eps: float = 0.2  # PPO ratio clipping
    vf_clip_eps: float = 0.2  # value clipping
    vf_coef: float = 0.1  # value loss coefficient (lm-human-preferences)
    grad_clip: float = 1.0  # clip the global gradient norm
    separate_grad_clip: bool = False  # clip the policy's and the value model's gradient norms each on its own
    ptx_coef: float = 0.0  # gamma of PPO-ptx: weight of the pretraining next-token loss; 0 = plain PPO (README)
    ptx_batch_size: int = 8  # corpus windows of block_size tokens per update step
    # iterated RLHF (Ouyang et al. 2022: steps 2 and 3 "can be iterated continuously")
    rounds: int = 5  # RLHF rounds (1 = plain RLHF); each after the first collects comparisons on the current policy
    round_prompts: int = 300  # RM training prompts sampled from the policy and ranked in each later round
    round_rm_epochs: int = 1  # passes over all comparisons so far when the RM goes on training
    round_rm_lr: float = 1e-4  # the RM's constant learning rate in later rounds
    labeler: str = "auto"  # ranks the policy's samples in later rounds: auto (the RM's) | none | module:function
    # logging and evaluation
    sample_every: int = 10  # print sample responses every this many iterations
    snapshots: str = ""  # e.g. "20,40": also save the policy after these iterations, as out/ppo/model_<it>.pt
    report: bool = True  # evaluate at the end (False: lab.py evaluates the saved policies itself)
    eval_temperature: float = 0.7  # temperature of the final SFT-vs-PPO comparison
    # the sharpening control: SFT sampled at its best temperature, which PPO must beat to have learned more than
    # a lower temperature gives for free
    control_temperatures: str = "0.1,0.3,0.5,0.7"  # SFT temperatures the control picks from ("" = no control)
    control_prompts: int = 240  # PPO prompts (never the held-out ones) the control's temperature is chosen on
    samples_per_prompt: int = 4  # samples of each model per held-out prompt (the CI is bootstrapped over prompts)
    max_eval_prompts: int = 0  # evaluate on at most this many held-out prompts (0 = all)
    few_shot: int = 3  # the report also compares the base model, prompted with this many demonstrations (0 = not)
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    compile: str = "auto"  # torch.compile the update's policy and value forwards: auto (on for CUDA) | True | False
    seed: int = 1337  # random seed (rank r uses seed + r)
    # interruption and exact resume (minigpt_rlhf/resume.py)
    resume: bool = False  # continue from {out_dir}/ppo/resume.pt (policy, value, optimizer, KL controller, RNG)
    save_interval: int = 10  # also save the resume state every this many iterations (0 = only when stopping)
    stop_at: int = 0  # save the resume state and exit after this many iterations (0 = run to the end)


PRESETS = {
    "laptop": {},
    "gpu": dict(iterations=200, rollout_batch_size=512, minibatch_size=64, max_new_tokens=64, upstream_preset="gpu"),
    # tiny keeps the default's structure (rounds, the critic) at toy sizes
    "tiny": dict(iterations=2, rounds=2, round_prompts=6, rollout_batch_size=8, minibatch_size=4, ppo_epochs=2,
                 max_new_tokens=12, max_eval_prompts=8, control_prompts=8, ptx_coef=1.0, ptx_batch_size=2,
                 upstream_preset="tiny"),
}


def ensure_upstream(config: Config):
    """Build the SFT and RM stages first if their checkpoints are missing, by running their scripts' main with
    their preset (--upstream_preset) and the settings the stages share. With --resume=True, a stage that was
    stopped midway (it left a resume.pt) continues from where it stopped. Returns the two checkpoint paths and
    whether an upstream stage was resumed, or None if a stage was stopped (Ctrl-C) again."""
    import train_rm
    import train_sft

    sft_path = os.path.join(config.out_dir, "sft", "model.pt")
    rm_path = os.path.join(config.out_dir, "rm", "model.pt")
    # decide before anything is written, so that every rank of a torchrun job takes the same branches
    missing = [(script, path) for script, path in ((train_sft, sft_path), (train_rm, rm_path))
               if not os.path.exists(path)]
    common = dict(out_dir=config.out_dir, data_dir=config.data_dir, tokenizer=config.tokenizer, judge=config.judge,
                  device=config.device, dtype=config.dtype, seed=config.seed)
    resumed = False
    for script, path in missing:
        stage = os.path.basename(os.path.dirname(path))  # sft or rm
        shared = dict(corpus=config.corpus, corpus_val=config.corpus_val, eval_prompts=config.eval_prompts) \
            if script is train_sft else {}  # the files both stages read
        cfg = script.Config(**{**script.PRESETS[config.upstream_preset], **common, **shared,
                               "resume": config.resume and os.path.exists(resume_path(config.out_dir, stage))})
        resumed = resumed or cfg.resume
        print0(f"{path} not found: {'resuming' if cfg.resume else 'running'} {script.__name__}.py first "
               f"(preset {config.upstream_preset})")
        if script.main(cfg).get("interrupted"):
            print0("stopped before PPO: `python train_ppo.py --resume=True` continues from there")
            return None
        barrier()  # rank 0 has written the checkpoint before any rank reads it
    return sft_path, rm_path, resumed


def base_model(config, sft_ckpt: dict, demos: list[dict] | None, tok, rt):
    """The pretrained model SFT started from (out/base/model.pt, or the SFT run's --init_from checkpoint), frozen,
    or None if config.few_shot is 0 or there is none; the report prompts it with `demos` (read_ppo_inputs)."""
    path = base_checkpoint_path(sft_ckpt["config"].get("init_from", ""), config.out_dir)
    if not config.few_shot or not os.path.exists(path):
        if config.few_shot:
            print0(f"no base model at {path}: the report compares PPO with SFT only")
        return None
    if demos is None:
        raise DataError(f"--sft_train: the base model {path} is prompted with demonstrations, and there is no "
                        "sft_train.jsonl; pass --sft_train=FILE or --few_shot=0")
    return load_model(load_checkpoint(path, "base model checkpoint"), tok, path, rt.device)


def minibatch_loss(policy, value_model, mb, config, banned, rt, ptx_coef, ptx_batch=None):
    """loss = policy loss + vf_coef * value loss + ptx_coef * pretraining next-token loss (PPO-ptx,
    Ouyang et al. 2022, eq. 2). ptx_batch: (x, y) corpus windows, needed only when ptx_coef > 0.
    value_model None (a critic-free estimator): no value loss."""
    with rt.autocast():
        logprobs, logp = policy_logprobs(policy, mb.tokens, mb.attention_mask, mb.prompt_len,
                                         config.temperature, banned, return_logp=True)
        values = None if value_model is None else value_estimates(value_model, mb.tokens, mb.attention_mask,
                                                                  mb.prompt_len)
    pg_loss, pg_stats = ppo.policy_loss(logprobs.float(), mb.logprobs, mb.advantages, mb.response_mask,
                                        config.clip_eps, ppo.LOSS_AGGREGATION[config.estimator],
                                        config.max_new_tokens)
    vf_loss, vf_stats = torch.zeros((), device=pg_loss.device), {}
    if values is not None:
        vf_loss, vf_stats = ppo.value_loss(values, mb.values, mb.returns, mb.response_mask, config.vf_clip_eps)
    loss = pg_loss + config.vf_coef * vf_loss
    ptx = torch.zeros((), device=loss.device)
    if ptx_coef > 0:
        x, y = ptx_batch
        with rt.autocast():
            ptx = lm_loss(policy(x.to(rt.device)).float(), y.to(rt.device))
        loss = loss + ptx_coef * ptx
    stats = {"pg_loss": pg_loss.item(), "vf_loss": vf_loss.item(), "ptx_loss": float(ptx.detach()),
             "entropy": float(entropy(logp.detach().float(), mb.response_mask)),
             **{k: float(v) for k, v in {**pg_stats, **vf_stats}.items()}}
    return loss, stats


def ppo_update(policy, value_model, optimizer, scaler, r, config, banned, corpus, rng, rt, ptx_coef, iteration=0):
    """ppo_epochs passes over the rollout batch in minibatches. The first epoch walks the minibatches in
    order, as make_rollout scored them, so the ratio is exactly 1 on the first one; later epochs shuffle."""
    B = r.tokens.size(0)
    critic = [] if value_model is None else list(value_model.parameters())
    params = list(policy.parameters()) + critic
    stats = []
    for epoch in range(config.ppo_epochs):
        order = torch.arange(B) if epoch == 0 else torch.from_numpy(rng.permutation(B))
        for i in range(0, B, config.minibatch_size):
            mb = r.index(order[i: i + config.minibatch_size].to(r.tokens.device))
            block = unwrap(policy).config.block_size
            ptx_batch = corpus.batch(config.ptx_batch_size, block, rng) if ptx_coef > 0 else None
            loss, mb_stats = minibatch_loss(policy, value_model, mb, config, banned, rt, ptx_coef, ptx_batch)
            check_finite(loss, "ppo", f"at iteration {iteration} (epoch {epoch}, minibatch "
                         f"{i // config.minibatch_size})", rt)  # every rank stops together
            scaler.scale(loss).backward()
            all_reduce_grads(params, rt)  # each rank sampled its own rollouts; average their gradients
            groups = [list(policy.parameters()), critic] if config.separate_grad_clip and critic else None
            clip_and_step(optimizer, scaler, params, config.grad_clip, groups)
            stats.append(mb_stats)
    out = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
    out["first_ratio_mean"], out["first_approx_kl"] = stats[0]["ratio_mean"], stats[0]["approx_kl"]
    return out


def resume_ppo(config: Config, state: dict | None, tok, rt, policy, value_model, rm, kl_ctl, rounds, optimizer,
               scaler, rng, gen) -> int:
    """Load out/ppo/resume.pt (read by read_ppo_inputs, or now if it was not there then) into the models, KL
    controller, RLHF rounds, optimizer and random streams; returns the iteration to continue from."""
    if state is None:  # a clear error: there is nothing to resume
        state = read_resume(config, "ppo")
    check_checkpoint(state, tok, where=resume_path(config.out_dir, "ppo"))
    policy.load_state_dict(state["model"])
    if value_model is not None:
        value_model.load_state_dict(state["value_model"])
    kl_ctl.load_state_dict(state["kl_ctl"])
    rounds.load_state(rm, state)
    start = restore_training(state, rt, optimizer, scaler, rng, gen)
    print0(f"resuming PPO at iteration {start} from {resume_path(config.out_dir, 'ppo')}")
    return start


def iteration_metrics(r, gold: list[float] | None, kl_ctl, update_stats: dict, rt, critic: bool = True) -> dict:
    """What each iteration logs, as means over the rollouts of ALL ranks (every rank has the same number).
    gold: the judge's scores of the rollouts (None without a judge); critic: whether there is a value model
    (explained_variance is logged only then)."""
    ones = torch.ones_like(r.scores)
    local = {
        "score": float(r.scores.mean()),
        "response_len": float(r.response_mask.sum(1).mean()),
        "eos_rate": float(r.ended.float().mean()),
        **update_stats,
    }
    if gold is not None:
        local["gold_score"] = float(np.mean(gold))  # logged only, never used for training
    return {
        "rm_score": float(ppo.masked_mean(r.rm_scores, r.ended.float(), all_ranks=True)),  # nan if none ended
        # the KL for the controller: mean over rollouts of the per-sequence SUM of k1
        "kl": float(ppo.masked_mean(r.kl.sum(1), ones, all_ranks=True)),
        "kl_k3": float(ppo.masked_mean(ppo.k3_kl(r.logprobs, r.ref_logprobs, r.response_mask).sum(1), ones,
                                       all_ranks=True)),
        **({"explained_variance": float(ppo.explained_variance(r.values, r.returns, r.response_mask,
                                                                all_ranks=True))} if critic else {}),
        "kl_coef": kl_ctl.value,
        **all_reduce_means(local, rt),
    }


def throughput(metrics: dict, rollout_batch_size: int, seconds: float, t_rollout: float) -> dict:
    """The iteration's training seconds (rollout, advantages, update: not the judge's scores, the metrics or the
    log; lab.py sums them as every method's training time), response tokens sampled per second, the share of it
    spent on rollouts (t_rollout seconds), and on a GPU the peak CUDA memory so far."""
    cuda = {"cuda_peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20} if torch.cuda.is_initialized() else {}
    return {"iteration_s": seconds, "tokens_per_s": metrics["response_len"] * rollout_batch_size / seconds,
            "rollout_time_frac": t_rollout / seconds, **cuda}


def show_progress(bar, metrics: dict, it: int, batch, texts, gold, config: Config, rt):
    """The progress bar's RM score, KL, EOS rate (and gold score); every sample_every iterations a response."""
    shown = dict(rm=f"{metrics['rm_score']:.2f}", kl=f"{metrics['kl']:.2f}", eos=f"{metrics['eos_rate']:.2f}")
    if gold is not None:
        shown["gold"] = f"{metrics['gold_score']:.3f}"
    bar.set_postfix(**shown)
    if rt.master and config.sample_every and (it + 1) % config.sample_every == 0:
        judged = f"  (gold {gold[0]:.2f})" if gold else ""
        tqdm.write(f"--- iteration {it + 1}: {batch[0]['prompt']}\n>>> {texts[0]}{judged}")


def training_state(value_model, kl_ctl, rounds, rm) -> dict:
    """What PPO's resume state holds besides the policy and optimizer: the value model (if there is one), the KL
    controller, and the RLHF rounds' RM, comparisons and first-round policy (with --rounds > 1)."""
    critic = {} if value_model is None else {"value_model": value_model.state_dict()}
    return dict(**critic, kl_ctl=kl_ctl.state_dict(), **rounds.state(rm))


def save_policy(config: Config, rt, policy, value_model, tok, step: int):
    """out/ppo/model.pt: the policy, for sampling, and the value model (if there is one); the same whether the run
    ended or stopped."""
    if rt.master:
        critic = {} if value_model is None else {"value_model": value_model.state_dict()}
        save_checkpoint(os.path.join(config.out_dir, "ppo", "model.pt"), policy, tok, config, stage="ppo", step=step,
                        **critic)


def save_rounds(config: Config, rt, rounds, rm, tok, step: int):
    """With --rounds > 1: out/ppo/rm.pt, the reward model as the last round left it (an RM checkpoint, e.g. for
    sample.py --rm), and out/ppo/round_comparisons.jsonl, the comparisons the later rounds collected."""
    if rt.master and rounds.n_rounds > 1:
        save_checkpoint(os.path.join(config.out_dir, "ppo", "rm.pt"), rm, tok, config, stage="rm", step=step)
        write_comparisons(os.path.join(config.out_dir, "ppo", "round_comparisons.jsonl"), rounds.new)


def sharpening_control(config: Config, tok, rt, ref, rm, control_rows, grid, judge) -> dict:
    """The SFT model's best sampling temperature among `grid` (--control_temperatures), chosen on `control_rows`
    (PPO prompts, never the held-out evaluation prompts) by the judge, or by the RM without one."""
    best, scores = best_temperature(ref, tok, control_rows, grid, judge=judge, rm=rm,
                                    max_new_tokens=config.max_new_tokens, samples_per_prompt=config.samples_per_prompt,
                                    seed=2, no_eos_score=config.no_eos_penalty, runtime=rt)
    by = "gold" if judge is not None and judge.name == "world" else "judge" if judge is not None else "RM score"
    print0(f"sharpening control: SFT sampled at T = {', '.join(f'{t:g}' for t in grid)} on {len(control_rows)} PPO "
           f"prompts (not the held-out ones), mean {by} " + ", ".join(f"{scores[t]:.3f}" for t in grid)
           + f": best T = {best:g}")
    return {"sft_best_temperature": best, "sft_temperature_scores": {f"{t:g}": scores[t] for t in grid},
            "control_chosen_by": by, "n_control_prompts": len(control_rows)}


def report(config: Config, inputs, rt, policy, ref, rm, base, t0: float, train_time: float, first_round=None) -> dict:
    """PPO against SFT, SFT at its best temperature (the sharpening control), the base model prompted few-shot
    (the paper's "GPT-3 prompted") and, with --rounds > 1, the policy at the end of the first round, on held-out
    prompts, by RM score, KL and the judge (if any): printed, and written to out/ppo/eval.json."""
    tok, judge = inputs.tok, inputs.judge
    models, encoders, temperatures, labels, control = {"sft": ref}, {}, {}, {}, {}
    if base is not None:
        models = {"base": base, **models}
        room = base.config.block_size - config.max_new_tokens
        encoders["base"] = lambda prompt: few_shot_prompt(tok, prompt, inputs.base_demos, room)
    if inputs.control_temperatures:
        control = sharpening_control(config, tok, rt, ref, rm, inputs.control_rows, inputs.control_temperatures, judge)
        models["sft_best_t"], temperatures["sft_best_t"] = ref, control["sft_best_temperature"]
        labels["sft_best_t"] = f"SFT@{control['sft_best_temperature']:g}"
    if first_round is not None:  # what round 1 alone would have given: the RM it exploited was never retrained
        models["ppo_round1"], labels["ppo_round1"] = first_round, "PPO_R1"
    models["ppo"] = policy
    result, samples = compare_models(models, tok, inputs.eval_rows, reference="sft", candidate="ppo", judge=judge,
                                     rm=rm, max_new_tokens=config.max_new_tokens, temperature=config.eval_temperature,
                                     samples_per_prompt=config.samples_per_prompt, seed=1,
                                     no_eos_score=config.no_eos_penalty, corpus_val=inputs.corpus_val, runtime=rt,
                                     prompt_encoders=encoders, ideal=judge.ideal_of if judge is not None else None,
                                     temperatures=temperatures)
    if judge is not None and inputs.demos:  # the DEMOS column: what the demonstrations themselves score
        result.update(demonstration_scores(judge, inputs.demos))
    result.update(**control, train_time_s=train_time, wall_time_s=time.time() - t0, config=asdict(config))
    if rt.master:
        print(format_comparison(result, samples, reference="sft", candidate="ppo", labels=labels))
        print(f"wall time {result['wall_time_s']:.0f}s")
        write_json(os.path.join(config.out_dir, "ppo", "eval.json"), result)
    return result


def write_overoptimization(config: Config, rt):
    """Gold and RM score of the rollouts against sqrt(KL): data always, a picture with matplotlib."""
    if rt.master:
        curve = overoptimization_data(os.path.join(config.out_dir, "ppo", "log.jsonl"))
        write_json(os.path.join(config.out_dir, "ppo", "overoptimization.json"), curve)
        plot_overoptimization(curve, os.path.join(config.out_dir, "ppo", "overoptimization.png"))


def main(config: Config) -> dict:
    t0 = time.time()
    inputs = read_ppo_inputs(config)  # every file this run reads (eval_prompts.jsonl only at the end), before any work
    upstream = ensure_upstream(config)
    if upstream is None:
        return {"interrupted": True, "iterations_done": 0}
    sft_path, rm_path, resumed_upstream = upstream
    rt = compute_init(config.device, config.dtype, config.seed)
    tok = inputs.tok
    # the checkpoints read_ppo_inputs found, else those the upstream stages just wrote
    sft_ckpt = inputs.sft_ckpt or load_checkpoint(sft_path, "SFT checkpoint", "Run `python train_sft.py`.")
    rm_ckpt = inputs.rm_ckpt or load_checkpoint(rm_path, "reward model checkpoint", "Run `python train_rm.py`.")
    # four models: policy <- SFT, reference = SFT (frozen), RM (frozen), value <- RM (InstructGPT); a
    # critic-free estimator (rloo, grpo, dr_grpo) builds no value model: its baseline is the prompt's other samples
    critic = config.estimator == "gae"
    policy = load_model(sft_ckpt, tok, sft_path, rt.device, trainable=True)
    ref = load_model(sft_ckpt, tok, sft_path, rt.device)
    rm = load_model(rm_ckpt, tok, rm_path, rt.device)
    value_model = load_model(rm_ckpt, tok, rm_path, rt.device, trainable=True) if critic else None
    banned = banned_token_ids(policy.config.vocab_size, tok.n_vocab, tok.pad_id, rt.device)
    # torch's default AdamW betas (not configure_optimizer's 0.95) and no weight decay
    optimizer = configure_optimizer([policy] + ([value_model] if critic else []), config.lr, betas=(0.9, 0.999),
                                    eps=config.adam_eps, fused=rt.device.type == "cuda")
    scaler = make_scaler(rt)
    # the update's forwards may be compiled; rollouts sample with the plain policy (its KV cache)
    train_policy = maybe_compile(policy, config.compile, rt)
    train_value = maybe_compile(value_model, config.compile, rt) if critic else None
    if inputs.rounds > 1 and inputs.round_inputs is None:  # the RM was made just now: its record is read now
        inputs.round_inputs = read_round_inputs(config, rm_ckpt, rm_path, inputs.round_labeler, tok)
    rounds = IteratedRLHF(config, inputs.rounds, inputs.round_inputs, tok, rt, inputs.judge)
    kl_ctl = ppo.kl_controller(config.kl_coef, config.kl_target, config.kl_horizon)
    prompts, corpus, judge = inputs.prompts, inputs.corpus, inputs.judge
    base = base_model(config, sft_ckpt, inputs.base_demos, tok, rt)
    rng = np.random.default_rng(config.seed + rt.rank)  # prompts, minibatch order and ptx windows of this rank
    gen = torch.Generator(device=rt.device).manual_seed(config.seed + rt.rank)  # sampling noise of this rank
    local_batch = config.rollout_batch_size // rt.world_size
    k = 1 if critic else config.group_size  # samples per prompt: a critic-free baseline needs a group of them
    snapshots = inputs.snapshots
    start = 0
    # --resume=True resumes PPO itself, unless it only had to resume an upstream stage and PPO never started
    if config.resume and (inputs.state is not None or not resumed_upstream):
        start = resume_ppo(config, inputs.state, tok, rt, policy, value_model, rm, kl_ctl, rounds, optimizer, scaler,
                           rng, gen)

    log = JSONLLogger(os.path.join(config.out_dir, "ppo", "log.jsonl"), rt.master, resume_step=start or None)
    print0(f"PPO: {config.iterations} iterations x {config.rollout_batch_size} rollouts, "
           f"{len(prompts)} prompts; beta {config.kl_coef}, ptx_coef {config.ptx_coef}"
           + ("" if critic else f"; estimator {config.estimator}, {k} samples per prompt, no value model"))
    bar = tqdm(range(start, config.iterations), desc="ppo", disable=not rt.master, initial=start,
               total=config.iterations)
    with Stopper(config, rt, "ppo", tok) as stopper:
        for it in bar:
            round_stats = {}
            if rounds.starts_at(it):  # logged with this iteration; its seconds as round_s, not in iteration_s
                t_round = time.time()
                rm, round_stats = rounds.run_round(rm, policy, it)
                round_stats["round_s"] = time.time() - t_round
                if round_stats["round"] == 2 and rt.master:  # the policy as round 1 left it (the report's PPO_R1)
                    save_checkpoint(os.path.join(config.out_dir, "ppo", "model_round1.pt"), policy, tok, config,
                                    stage="ppo", step=it)
            t_it = time.time()
            set_lr(optimizer, ppo.annealed_lr(config.lr, it, config.iterations) if config.anneal_lr else config.lr)
            # k consecutive copies of each prompt (k = 1 with the value model)
            batch = [prompts[i] for i in rng.choice(len(prompts), local_batch // k, replace=False) for _ in range(k)]
            # sampled by the plain policy, scored by the modules the update runs through (make_rollout)
            r = make_rollout(policy, ref, rm, train_value, [b["ids"] for b in batch], tok, config.max_new_tokens,
                             config.temperature, config.no_eos_penalty, banned, config.minibatch_size, gen,
                             rt.autocast, score_policy=train_policy)
            t_rollout = time.time() - t_it
            r = compute_advantages(r, kl_ctl.value, config.gamma, config.lam, config.estimator, k)
            stats = ppo_update(train_policy, train_value, optimizer, scaler, r, config, banned, corpus, rng, rt,
                               config.ptx_coef, iteration=it)
            t_train = time.time() - t_it
            texts = decode_responses(r, tok)
            gold = None if judge is None else [judge.score(b["prompt"], t, bool(e))
                                               for b, t, e in zip(batch, texts, r.ended)]
            metrics = iteration_metrics(r, gold, kl_ctl, stats, rt, critic)
            metrics.update(iteration=it, lr=optimizer.param_groups[0]["lr"], **round_stats,
                           **throughput(metrics, config.rollout_batch_size, t_train, t_rollout))
            kl_ctl.update(metrics["kl"], config.rollout_batch_size)
            log.log(**metrics)
            show_progress(bar, metrics, it, batch, texts, gold, config, rt)
            if it + 1 in snapshots and rt.master:  # the policy as it is now (lab.py's settings of "steps")
                save_checkpoint(os.path.join(config.out_dir, "ppo", f"model_{it + 1}.pt"), policy, tok, config,
                                stage="ppo", step=it + 1)
            if stopper.after_step(it + 1, config.iterations, policy, optimizer, scaler, rng, gen,
                                  **training_state(value_model, kl_ctl, rounds, rm)):
                save_policy(config, rt, policy, value_model, tok, it + 1)
                print0(f"stopped after iteration {it + 1}: policy saved; resume with --resume=True")
                return {"interrupted": True, "iterations_done": it + 1}
    save_policy(config, rt, policy, value_model, tok, config.iterations)
    save_rounds(config, rt, rounds, rm, tok, config.iterations)
    remove_resume(config.out_dir, "ppo", rt)
    train_time = time.time() - t0
    write_overoptimization(config, rt)
    if not config.report:
        return {"train_time_s": train_time}
    return report(config, inputs, rt, policy, ref, rm, base, t0, train_time, rounds.first_round_policy(policy))


if __name__ == "__main__":
    run_script(main, parse_config(Config, presets=PRESETS))
