"""Step 3 of InstructGPT: PPO (and PPO-ptx) against the reward model. The main job.

    python train_ppo.py                        # the whole pipeline on the laptop default
    python train_ppo.py --ptx_coef=1           # PPO-ptx: add the pretraining-loss mix (off by default, README)
    python train_ppo.py --resume=True          # continue after Ctrl-C (or an upstream stage stopped midway)
    python train_ppo.py --iterations=50 --kl_target=6
    torchrun --nproc_per_node=2 train_ppo.py

If out/sft/model.pt or out/rm/model.pt is missing, train_sft.py / train_rm.py are run first (it says so).

Objective (Ouyang et al. 2022, eq. 2), maximised:
    E_{(x,y)~pi_RL} [ r_theta(x, y) - beta * log(pi_RL(y|x) / pi_SFT(y|x)) ] + gamma * E_{x~D_pretrain} [ log pi_RL(x) ]
in its per-token form (Ziegler et al. 2019): r_t = -beta * kl_t, plus the RM score on the EOS token;
GAE (gamma 1, lambda 0.95); whitened advantages; PPO clipped surrogate and clipped value loss; several
PPO epochs of minibatches per batch of rollouts; the next-token loss on the pretraining corpus scaled by
ptx_coef (PPO-ptx). Policy and reference start from SFT; the value function starts from the RM.

Departures from the paper: tiny scale; several PPO epochs per batch (as lm-human-preferences, where the
paper used 1); the ptx coefficient defaults to 0 (plain PPO), chosen by measurement (README: our small SFT
model has already forgotten the corpus, so ptx re-learns it at the cost of KL and win rate), rather than the
paper's 27.8, which multiplies a loss over far more pretraining tokens per step than RL tokens.
Writes out/ppo/model.pt, out/ppo/log.jsonl, out/ppo/eval.json.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from minigpt_rlhf import ppo, world
from minigpt_rlhf.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint, unwrap
from minigpt_rlhf.common import (
    JSONLLogger,
    all_reduce_grads,
    all_reduce_mean,
    all_reduce_means,
    barrier,
    clip_and_step,
    compute_init,
    make_scaler,
    maybe_compile,
    print0,
    run_script,
    write_json,
)
from minigpt_rlhf.config import parse_config
from minigpt_rlhf.data import TokenStream, encode_prompts, read_prompts
from minigpt_rlhf.evaluate import corpus_loss, format_table, gold_report, gold_scores, sample_responses, win_rate
from minigpt_rlhf.inputs import check_ppo_inputs
from minigpt_rlhf.losses import lm_loss
from minigpt_rlhf.resume import (
    Stopper,
    load_resume,
    remove_resume,
    restore_training,
    resume_path,
    save_resume,
    warn_config_changes,
)
from minigpt_rlhf.rollout import compute_advantages, entropy, make_rollout, policy_logprobs, value_estimates
from minigpt_rlhf.sampling import banned_token_ids
from minigpt_rlhf.tokenizer import get_tokenizer


@dataclass
class Config:
    out_dir: str = "out"  # output root: reads sft/ and rm/, writes ppo/
    data_dir: str = "data"  # ppo_prompts.jsonl, eval_prompts.jsonl, corpus_train.txt, corpus_val.txt
    tokenizer: str = "default"  # must match the checkpoints' tokenizer
    upstream_preset: str = "laptop"  # preset for train_sft.py / train_rm.py if their checkpoints are missing
    # rollouts
    iterations: int = 35  # PPO iterations (rollout batch + update)
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
    # update
    ppo_epochs: int = 4  # passes over each rollout batch
    minibatch_size: int = 16  # rollouts per gradient step
    lr: float = 2e-5  # AdamW learning rate (policy and value)
    adam_eps: float = 1e-8  # AdamW epsilon (changes early approx-KL, see RLHF_NOTES)
    clip_eps: float = 0.2  # PPO ratio clipping
    vf_clip_eps: float = 0.2  # value clipping
    vf_coef: float = 0.1  # value loss coefficient (lm-human-preferences)
    grad_clip: float = 1.0  # clip the global gradient norm
    ptx_coef: float = 0.0  # gamma of PPO-ptx: weight of the pretraining next-token loss; 0 = plain PPO (README)
    ptx_batch_size: int = 8  # corpus windows of block_size tokens per update step
    # logging and evaluation
    sample_every: int = 10  # print sample responses every this many iterations
    eval_temperature: float = 0.7  # temperature of the final SFT-vs-PPO comparison
    max_eval_prompts: int = 0  # evaluate on at most this many held-out prompts (0 = all)
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
    "tiny": dict(iterations=2, rollout_batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=12,
                 max_eval_prompts=8, ptx_coef=1.0, ptx_batch_size=2, upstream_preset="tiny"),  # smoke-tests ptx too
}


def ensure_upstream(config: Config):
    """Build the SFT and RM stages first if their checkpoints are missing. With --resume=True, a stage that
    was stopped midway (it left a resume.pt) continues from where it stopped. Returns the two checkpoint
    paths and whether an upstream stage was resumed, or None if a stage was stopped (Ctrl-C) again."""
    import train_rm
    import train_sft

    sft_path = os.path.join(config.out_dir, "sft", "model.pt")
    rm_path = os.path.join(config.out_dir, "rm", "model.pt")
    # decide before anything is written, so that every rank of a torchrun job takes the same branches
    missing = [(script, path) for script, path in ((train_sft, sft_path), (train_rm, rm_path))
               if not os.path.exists(path)]
    common = dict(out_dir=config.out_dir, data_dir=config.data_dir, tokenizer=config.tokenizer,
                  device=config.device, dtype=config.dtype, seed=config.seed)
    resumed = False
    for script, path in missing:
        stage = os.path.basename(os.path.dirname(path))  # sft or rm
        cfg = script.Config()
        for k, v in {**script.PRESETS[config.upstream_preset], **common}.items():
            setattr(cfg, k, v)
        cfg.resume = config.resume and os.path.exists(resume_path(config.out_dir, stage))
        resumed = resumed or cfg.resume
        print0(f"{path} not found: {'resuming' if cfg.resume else 'running'} {script.__name__}.py first "
               f"(preset {config.upstream_preset})")
        if script.main(cfg).get("interrupted"):
            return None
        barrier()  # rank 0 has written the checkpoint before any rank reads it
    return sft_path, rm_path, resumed


def frozen(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def no_dropout(model):
    """Dropout off in all four models: otherwise the ratio is not 1 on the first minibatch (RLHF_NOTES)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout") and isinstance(m.dropout, float):
            m.dropout = 0.0
    model.config.dropout = 0.0
    return model.eval()


def minibatch_loss(policy, value_model, mb, config, banned, rt, ptx_coef, ptx_batch=None):
    """loss = policy loss + vf_coef * value loss + ptx_coef * pretraining next-token loss (PPO-ptx,
    Ouyang et al. 2022, eq. 2). ptx_batch: (x, y) corpus windows, needed only when ptx_coef > 0."""
    with rt.autocast():
        logprobs, logp = policy_logprobs(policy, mb.tokens, mb.attention_mask, mb.prompt_len,
                                         config.temperature, banned, return_logp=True)
        values = value_estimates(value_model, mb.tokens, mb.attention_mask, mb.prompt_len)
    pg_loss, pg_stats = ppo.policy_loss(logprobs.float(), mb.logprobs, mb.advantages, mb.response_mask,
                                        config.clip_eps)
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
    params = list(policy.parameters()) + list(value_model.parameters())
    stats = []
    for epoch in range(config.ppo_epochs):
        order = torch.arange(B) if epoch == 0 else torch.from_numpy(rng.permutation(B))
        for i in range(0, B, config.minibatch_size):
            mb = r.index(order[i: i + config.minibatch_size].to(r.tokens.device))
            block = unwrap(policy).config.block_size
            ptx_batch = corpus.batch(config.ptx_batch_size, block, rng) if ptx_coef > 0 else None
            loss, mb_stats = minibatch_loss(policy, value_model, mb, config, banned, rt, ptx_coef, ptx_batch)
            finite = all_reduce_mean(float(torch.isfinite(loss)), rt) == 1.0  # every rank stops together
            if not finite:
                raise SystemExit(f"ppo: loss became {loss.item()} at iteration {iteration} (epoch {epoch}, "
                                 f"minibatch {i // config.minibatch_size}); stopping (the last saved checkpoint "
                                 "is left as it was). Try a lower learning rate.")
            scaler.scale(loss).backward()
            all_reduce_grads(params, rt)  # each rank sampled its own rollouts; average their gradients
            clip_and_step(optimizer, scaler, params, config.grad_clip)
            stats.append(mb_stats)
    out = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
    out["first_ratio_mean"], out["first_approx_kl"] = stats[0]["ratio_mean"], stats[0]["approx_kl"]
    return out


def iteration_metrics(r, gold: list[float], kl_ctl, update_stats: dict, rt) -> dict:
    """What each iteration logs, as means over the rollouts of ALL ranks (every rank has the same number)."""
    ones = torch.ones_like(r.scores)
    local = {
        "score": float(r.scores.mean()),
        "gold_score": float(np.mean(gold)),  # logged only, never used for training
        "response_len": float(r.response_mask.sum(1).mean()),
        "eos_rate": float(r.ended.float().mean()),
        **update_stats,
    }
    return {
        # these four are all-rank statistics already (ppo.masked_mean / explained_variance all-reduce)
        "rm_score": float(ppo.masked_mean(r.rm_scores, r.ended.float())),  # nan if no response ended
        # the KL for the controller: mean over rollouts of the per-sequence SUM of k1
        "kl": float(ppo.masked_mean(r.kl.sum(1), ones)),
        "kl_k3": float(ppo.masked_mean(ppo.k3_kl(r.logprobs, r.ref_logprobs, r.response_mask).sum(1), ones)),
        "explained_variance": float(ppo.explained_variance(r.values, r.returns, r.response_mask)),
        "kl_coef": kl_ctl.value,
        **all_reduce_means(local, rt),
    }


def decode_responses(r, tok):
    texts = []
    for i in range(r.tokens.size(0)):
        n = int(r.response_mask[i].sum())
        ids = r.tokens[i, r.prompt_len: r.prompt_len + n].tolist()
        texts.append(tok.decode(ids[:-1] if bool(r.ended[i]) else ids))
    return texts


@torch.no_grad()
def kl_to_reference(policy, ref, tok, samples, config, banned, rt):
    """Mean over responses of sum_t (log pi - log pi_SFT) on the policy's own samples: KL(pi || pi_SFT)."""
    from minigpt_rlhf.data import encode_prompt
    from minigpt_rlhf.reward import collate_sequences

    total = 0.0
    for i in range(0, len(samples), 32):
        chunk = samples[i: i + 32]
        prompts = [encode_prompt(tok, s["prompt"]) for s in chunk]
        P = max(len(p) for p in prompts)
        seqs, masks = [], []
        for p, s in zip(prompts, chunk):
            resp = s["response_ids"]  # the sampled tokens themselves, EOS included
            seqs.append([tok.pad_id] * (P - len(p)) + p + resp)
            masks.append([0] * (P - len(p)) + [1] * (len(p) + len(resp)))
        tokens, _ = collate_sequences(seqs, tok.pad_id, rt.device)
        mask, _ = collate_sequences(masks, 0, rt.device)
        lp = policy_logprobs(policy, tokens, mask, P, config.eval_temperature, banned)
        lr = policy_logprobs(ref, tokens, mask, P, config.eval_temperature, banned)
        total += float(((lp - lr) * mask[:, P:]).sum())
    return total / len(samples)


def main(config: Config) -> dict:
    t0 = time.time()
    check_ppo_inputs(config)  # every file this run reads (eval_prompts.jsonl only at the end), before any work
    upstream = ensure_upstream(config)
    if upstream is None:
        print0("stopped before PPO: `python train_ppo.py --resume=True` continues from there")
        return {"interrupted": True, "iterations_done": 0}
    sft_path, rm_path, resumed_upstream = upstream
    rt = compute_init(config.device, config.dtype, config.seed)
    tok = get_tokenizer(config.tokenizer)
    sft_ckpt = load_checkpoint(sft_path, "SFT checkpoint", "Run `python train_sft.py`.")
    rm_ckpt = load_checkpoint(rm_path, "reward model checkpoint", "Run `python train_rm.py`.")
    # four models: policy <- SFT, reference = SFT (frozen), RM (frozen), value <- RM (InstructGPT)
    policy = no_dropout(model_from_checkpoint(sft_ckpt, tok, where=sft_path)).to(rt.device)
    ref = frozen(no_dropout(model_from_checkpoint(sft_ckpt, tok, where=sft_path))).to(rt.device)
    rm = frozen(no_dropout(model_from_checkpoint(rm_ckpt, tok, where=rm_path))).to(rt.device)
    value_model = no_dropout(model_from_checkpoint(rm_ckpt, tok, where=rm_path)).to(rt.device)
    banned = banned_token_ids(policy.config.vocab_size, tok.n_vocab, tok.pad_id, rt.device)
    params = list(policy.parameters()) + list(value_model.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, eps=config.adam_eps, weight_decay=0.0,
                                  **({"fused": True} if rt.device.type == "cuda" else {}))
    scaler = make_scaler(rt)
    # the update's forwards may be compiled; rollouts sample with the plain policy (its KV cache)
    train_policy = maybe_compile(policy, config.compile, rt)
    train_value = maybe_compile(value_model, config.compile, rt)
    kl_ctl = (ppo.AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon) if config.kl_target > 0
              else ppo.FixedKLController(config.kl_coef))

    rows = read_prompts(os.path.join(config.data_dir, "ppo_prompts.jsonl"))
    prompts, skipped = encode_prompts(tok, rows, config.max_prompt_len, "ppo_prompts.jsonl")
    if skipped:
        print0(f"skipped {skipped} PPO prompts longer than max_prompt_len={config.max_prompt_len} tokens")
    corpus = TokenStream(tok, os.path.join(config.data_dir, "corpus_train.txt"))
    corpus_val = TokenStream(tok, os.path.join(config.data_dir, "corpus_val.txt"))
    rng = np.random.default_rng(config.seed + rt.rank)  # prompts, minibatch order and ptx windows of this rank
    gen = torch.Generator(device=rt.device).manual_seed(config.seed + rt.rank)  # sampling noise of this rank
    local_batch = config.rollout_batch_size // rt.world_size
    start = 0
    # --resume=True resumes PPO itself, unless it only had to resume an upstream stage and PPO never started
    if config.resume and (os.path.exists(resume_path(config.out_dir, "ppo")) or not resumed_upstream):
        state = load_resume(config.out_dir, "ppo", rt)
        model_from_checkpoint(state, tok, where=resume_path(config.out_dir, "ppo"))  # checks tokenizer + shapes
        policy.load_state_dict(state["model"])
        value_model.load_state_dict(state["value_model"])
        kl_ctl.load_state_dict(state["kl_ctl"])
        start = restore_training(state, rt, optimizer, scaler, rng, gen)
        print0(f"resuming PPO at iteration {start} from {resume_path(config.out_dir, 'ppo')}")
        warn_config_changes(state, config, print0)

    log = JSONLLogger(os.path.join(config.out_dir, "ppo", "log.jsonl"), rt.master, resume_step=start or None)
    print0(f"PPO: {config.iterations} iterations x {config.rollout_batch_size} rollouts, "
           f"{len(prompts)} prompts; beta {config.kl_coef}, ptx_coef {config.ptx_coef}")
    bar = tqdm(range(start, config.iterations), desc="ppo", disable=not rt.master, initial=start,
               total=config.iterations)
    stopper = Stopper(config.stop_at, rt)
    with stopper:
        for it in bar:
            t_it = time.time()
            batch = [prompts[i] for i in rng.choice(len(prompts), local_batch, replace=False)]
            r = make_rollout(policy, ref, rm, value_model, [b["ids"] for b in batch], tok, config.max_new_tokens,
                             config.temperature, config.no_eos_penalty, banned, config.minibatch_size, gen,
                             rt.autocast)
            t_rollout = time.time() - t_it
            r = compute_advantages(r, kl_ctl.value, config.gamma, config.lam)
            stats = ppo_update(train_policy, train_value, optimizer, scaler, r, config, banned, corpus, rng, rt,
                               config.ptx_coef, iteration=it)
            texts = decode_responses(r, tok)
            gold = [world.gold_score(b["prompt"], t, eos=bool(e)) for b, t, e in zip(batch, texts, r.ended)]
            metrics = iteration_metrics(r, gold, kl_ctl, stats, rt)
            seconds = time.time() - t_it
            metrics.update(iteration=it, tokens_per_s=metrics["response_len"] * config.rollout_batch_size / seconds,
                           rollout_time_frac=t_rollout / seconds)
            kl_ctl.update(metrics["kl"], config.rollout_batch_size)
            log.log(**metrics)
            bar.set_postfix(rm=f"{metrics['rm_score']:.2f}", gold=f"{metrics['gold_score']:.3f}",
                            kl=f"{metrics['kl']:.2f}", eos=f"{metrics['eos_rate']:.2f}")
            if rt.master and config.sample_every and (it + 1) % config.sample_every == 0:
                tqdm.write(f"--- iteration {it + 1}: {batch[0]['prompt']}\n>>> {texts[0]}  (gold {gold[0]:.2f})")
            save, stop = stopper.after_step(it + 1, config.iterations, config.save_interval)
            if save:
                save_resume(config.out_dir, "ppo", rt, policy, tok, config, optimizer, scaler, it + 1, rng, gen,
                            value_model=value_model.state_dict(), kl_ctl=kl_ctl.state_dict())
            if stop:
                if rt.master:  # the policy so far, for sampling; --resume=True continues the run
                    save_checkpoint(os.path.join(config.out_dir, "ppo", "model.pt"), policy, tok, config,
                                    stage="ppo", step=it + 1, value_model=value_model.state_dict())
                print0(f"stopped after iteration {it + 1}: policy saved; resume with --resume=True")
                return {"interrupted": True, "iterations_done": it + 1}
    if rt.master:
        save_checkpoint(os.path.join(config.out_dir, "ppo", "model.pt"), policy, tok, config, stage="ppo",
                        step=config.iterations, kl_ctl=kl_ctl.state_dict(), value_model=value_model.state_dict())
    remove_resume(config.out_dir, "ppo", rt)
    train_time = time.time() - t0

    # ---- evaluation: the gold labeler compares PPO with SFT on held-out prompts ----
    eval_rows = read_prompts(os.path.join(config.data_dir, "eval_prompts.jsonl"))
    eval_rows, _ = encode_prompts(tok, eval_rows, config.max_prompt_len, "eval_prompts.jsonl")
    if config.max_eval_prompts:
        eval_rows = eval_rows[:: max(1, len(eval_rows) // config.max_eval_prompts)][: config.max_eval_prompts]
    sft_samples = sample_responses(ref, tok, eval_rows, config.max_new_tokens, config.eval_temperature, seed=1,
                                   runtime=rt)  # sharded over ranks, gathered on all
    ppo_samples = sample_responses(policy, tok, eval_rows, config.max_new_tokens, config.eval_temperature, seed=1,
                                   runtime=rt)
    sft_gold, ppo_gold = gold_scores(sft_samples), gold_scores(ppo_samples)
    wr, ci = win_rate(ppo_gold, sft_gold)
    sft_rep, ppo_rep = gold_report(sft_samples), gold_report(ppo_samples)
    result = {
        "win_rate_vs_sft": wr,
        "win_rate_ci95": list(ci),
        "gold_score_sft": sft_rep["gold_score_mean"],
        "gold_score_ppo": ppo_rep["gold_score_mean"],
        "gold_score_by_family_sft": sft_rep["gold_score_by_family"],
        "gold_score_by_family_ppo": ppo_rep["gold_score_by_family"],
        "rm_score_sft": rm_score(rm, tok, sft_samples, rt),
        "rm_score_ppo": rm_score(rm, tok, ppo_samples, rt),
        "eos_rate_sft": sft_rep["eos_rate"],
        "eos_rate_ppo": ppo_rep["eos_rate"],
        "response_tokens_sft": sft_rep["mean_response_tokens"],
        "response_tokens_ppo": ppo_rep["mean_response_tokens"],
        "kl_from_sft": kl_to_reference(policy, ref, tok, ppo_samples, config, banned, rt),
        "pretrain_loss_sft": corpus_loss(ref, corpus_val, ref.config.block_size),
        "pretrain_loss_ppo": corpus_loss(policy, corpus_val, policy.config.block_size),
        "n_eval_prompts": len(eval_rows),
        "train_time_s": train_time,
        "wall_time_s": time.time() - t0,
        "config": asdict(config),
    }
    if rt.master:
        fams = sorted(set(sft_rep["gold_score_by_family"]) | set(ppo_rep["gold_score_by_family"]))
        table = [[f, sft_rep["gold_score_by_family"].get(f, float("nan")),
                  ppo_rep["gold_score_by_family"].get(f, float("nan"))] for f in fams]
        table += [["ALL (gold score)", result["gold_score_sft"], result["gold_score_ppo"]],
                  ["RM score", result["rm_score_sft"], result["rm_score_ppo"]],
                  ["EOS rate", result["eos_rate_sft"], result["eos_rate_ppo"]],
                  ["response tokens", result["response_tokens_sft"], result["response_tokens_ppo"]],
                  ["pretraining loss", result["pretrain_loss_sft"], result["pretrain_loss_ppo"]]]
        print(format_table(["held-out prompts", "SFT", "PPO"], table))
        print(f"gold win rate of PPO over SFT: {wr:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}, {len(eval_rows)} prompts, "
              f"ties count 1/2); KL(PPO || SFT) = {result['kl_from_sft']:.2f} nats per response; "
              f"wall time {result['wall_time_s']:.0f}s")
        for s, p in list(zip(sft_samples, ppo_samples))[:4]:
            print(f"--- {s['prompt']}\n SFT: {s['response']}\n PPO: {p['response']}")
        write_json(os.path.join(config.out_dir, "ppo", "eval.json"), result)
    return result


@torch.no_grad()
def rm_score(rm, tok, samples, rt) -> float:
    """Mean RM score of the responses that ended with EOS (the RM never scores unfinished ones)."""
    from minigpt_rlhf.reward import encode_responses, score_comparisons

    done = [s for s in samples if s["ended"] and s["response"].strip()]
    if not done:
        return float("nan")
    enc = [encode_responses(tok, s["prompt"], [s["response"]]) for s in done]
    scores = torch.cat([score_comparisons(rm, enc[i: i + 32], tok.pad_id, rt.device) for i in range(0, len(enc), 32)])
    return float(scores.float().mean())


if __name__ == "__main__":
    run_script(main, parse_config(Config, presets=PRESETS))
