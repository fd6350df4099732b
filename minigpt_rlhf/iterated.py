"""Iterated RLHF: steps 2 and 3 again, on comparisons of the current policy (Ouyang et al. 2022, sec. 3.1:
they "can be iterated continuously"). train_ppo.py --rounds=R splits its iterations into R rounds; before
each round after the first, the current policy samples K responses for `round_prompts` of the RM's training
prompts, the same simulated labelers rank them (the labeler temperature of the first round), and the RM goes
on training on the old and new comparisons together. It sees exactly the responses PPO has learned to
overrate. The RM's held-out prompts stay held out; its bias and gain are set again as train_rm.py sets them.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from .common import print0
from .comparisons import collect_comparisons, comparisons_path, read_saved_comparisons, train_and_held_out
from .data import DataError, data_file, read_sft
from .evaluate import rm_report
from .judge import resolve_judge, resolve_labeler
from .reward import normalization_demos, normalize, rm_rewards, train_more


class IteratedRLHF:
    """The rounds of one PPO run. `config`: train_ppo.py's (iterations, rounds, round_prompts, round_rm_epochs,
    round_rm_lr, judge); rm_ckpt: the RM checkpoint, whose saved config says where its comparisons, labelers and
    demonstrations are and how it was trained."""

    def __init__(self, config, rm_ckpt: dict, tok, rt):
        self.config, self.tok, self.rt = config, tok, rt
        self.rm_config = SimpleNamespace(**rm_ckpt["config"])
        c = self.rm_config
        self.per_round = -(-config.iterations // config.rounds)  # ceil
        self.first_round = None  # the policy's weights at the end of the first round
        if config.rounds <= 1:
            return
        comparisons, val, self.temperature = read_saved_comparisons(SimpleNamespace(**{**vars(c), "relabel": False}))
        if comparisons is None:
            raise DataError(f"{comparisons_path(c)}: not found; --rounds={config.rounds} goes on training the RM on "
                            "the comparisons it was trained on. Run train_rm.py again, or pass --rounds=1")
        self.train, self.val = train_and_held_out(comparisons, val, c)
        demos = read_sft(data_file(c, "sft_train", "sft_train.jsonl", "the reward's normalisation"))
        self.demos = normalization_demos(demos, c.n_norm_demos, c.seed)
        prompts = [x["prompt"] for x in self.train + self.val]
        self.labeler = resolve_labeler(c.labeler, prompts)  # the same labelers as the first round's
        self.judge = resolve_judge(config.judge, prompts)  # for the RM's held-out accuracy vs gold only
        self.new = []  # comparisons sampled from the policy in later rounds

    def state(self, rm) -> dict:
        """What resuming needs: the RM as the rounds so far left it, their comparisons, the labeler temperature."""
        if self.config.rounds <= 1:
            return {}
        return {"reward_model": rm.state_dict(), "round_comparisons": self.new,
                "labeler_temperature": self.temperature,
                **({"first_round_policy": self.first_round} if self.first_round is not None else {})}

    def load_state(self, rm, state: dict):
        if self.config.rounds > 1 and "reward_model" in state:
            rm.load_state_dict(state["reward_model"])
            self.new, self.temperature = state["round_comparisons"], state["labeler_temperature"]
            self.first_round = state.get("first_round_policy")

    def first_round_policy(self, policy):
        """The policy as the first round left it (what PPO against the first RM alone gives), frozen; None with
        one round."""
        if self.first_round is None:
            return None
        first = copy.deepcopy(policy)
        first.load_state_dict(self.first_round)
        return first.eval().requires_grad_(False)

    def starts_at(self, it: int) -> bool:
        return self.config.rounds > 1 and it > 0 and it % self.per_round == 0

    def step(self, rm, policy, it: int, rng) -> tuple[torch.nn.Module, dict]:
        """Collect, label, train, normalise; returns the new frozen RM and what to log."""
        r = it // self.per_round
        if self.first_round is None:
            self.first_round = {k: v.detach().clone() for k, v in policy.state_dict().items()}
        cfg = copy.copy(self.rm_config)
        cfg.seed = self.rm_config.seed + 1000 * r  # fresh sampling noise each round
        idx = rng.choice(len(self.train), min(self.config.round_prompts, len(self.train)), replace=False)
        rows = [{"prompt": self.train[i]["prompt"], "family": self.train[i].get("family", "")} for i in idx]
        new, self.temperature = collect_comparisons(policy, self.tok, rows, cfg, self.rt, rng, self.labeler,
                                                    temperature=self.temperature)
        self.new += new
        rm = copy.deepcopy(rm).requires_grad_(True)
        train_acc = train_more(rm, self.tok, self.train + self.new, self.config.round_rm_epochs,
                               self.config.round_rm_lr, self.rm_config, self.rt, rng)
        normalize(rm, self.tok, self.demos, new[:200] if self.rm_config.normalize_gain else None, self.rt)
        held_out = rm_report(self.val, rm_rewards(rm, self.tok, self.val, self.rt), self.judge, self.temperature)
        stats = {"round": r + 1, "rm_train_accuracy": train_acc, "n_comparisons": len(self.train) + len(self.new),
                 "rm_accuracy_vs_labels": held_out["accuracy_vs_labels"]}
        if "accuracy_vs_gold" in held_out:
            stats["rm_accuracy_vs_gold"] = held_out["accuracy_vs_gold"]
        print0(f"round {r + 1}: {len(new)} new comparisons from the policy; RM held-out accuracy "
               + ", ".join(f"{k[len('rm_accuracy_'):].replace('_', ' ')} {v:.3f}" for k, v in stats.items()
                           if k.startswith("rm_accuracy")))
        return rm.eval().requires_grad_(False), stats
