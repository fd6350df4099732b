"""Iterated RLHF: steps 2 and 3 again, on comparisons of the current policy (Ouyang et al. 2022, sec. 3.1:
they "can be iterated continuously"). train_ppo.py --rounds=R splits its iterations into R rounds; before
each round after the first, the current policy samples K responses for `round_prompts` of the RM's training
prompts, the same simulated labelers rank them (the labeler temperature of the first round), and the RM goes
on training on the old and new comparisons together. It sees exactly the responses PPO has learned to
overrate. The RM's held-out prompts stay held out; its bias and gain are set again as train_rm.py sets them.

What a round needs from step 2 (where the comparisons are, which rows were held out, the labeler and its
temperature, how K responses were sampled, the demonstrations that set the mean 0, the optimizer's settings)
train_rm.py records in the RM checkpoint under "rounds" (round_record); train_ppo.py reads it once, before any
work (inputs.read_round_inputs), and passes it here as a RoundInputs. Nothing here reads train_rm.py's Config.

Under torchrun every rank must hold the same comparisons and the same RM after a round: the round draws its
prompts, each prompt's K, the labelers' noise and the RM's batch order from a generator seeded by (seed, round),
the same on every rank (the samples themselves are sharded and gathered), and common.check_ranks_agree stops the
run with a clear error, instead of a hang, if they ever differ.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from .common import check_ranks_agree, print0
from .comparisons import CollectSettings, collect_comparisons
from .evaluate import rm_report
from .judge import Scorer, is_world_prompt
from .reward import gain_samples, normalize, rm_rewards, train_more

RECORD_VERSION = 1


def round_record(comparisons_file: str, n_comparisons: int, held_out: list[int] | None, val_comparisons: str,
                 labeler: str, temperature: float | None, demos: list[dict], normalize_gain: bool,
                 collect: CollectSettings, weight_decay: float, prompts_per_batch: int, grad_clip: float) -> dict:
    """What train_rm.py saves in the RM checkpoint (key "rounds") for later RLHF rounds. comparisons_file: the
    comparisons it trained on (n_comparisons rows); held_out: the rows it held out (None: val_comparisons, a
    file, held them); labeler: the --labeler that ranked them, "" if they were brought as a file; temperature:
    the labelers' calibrated temperature (None if unknown); demos: the demonstrations whose mean reward was set
    to 0; normalize_gain: whether a unit-std gain was set too."""
    return {"version": RECORD_VERSION, "comparisons": comparisons_file, "n_comparisons": n_comparisons,
            "held_out_rows": held_out, "val_comparisons": val_comparisons, "labeler": labeler,
            "labeler_temperature": temperature,
            "normalization_demos": [{"prompt": d["prompt"], "response": d["response"]} for d in demos],
            "normalize_gain": normalize_gain, "collect": collect.asdict(),
            "optimizer": {"weight_decay": weight_decay, "prompts_per_batch": prompts_per_batch,
                          "grad_clip": grad_clip}}


@dataclass
class RoundInputs:
    """What the later rounds use, read once by inputs.read_round_inputs. train / val: the RM's training and
    held-out comparisons; labeler: ranks the policy's samples; temperature: the labelers' noise (None: calibrated
    on the first later round's groups, then kept); demos: those whose mean reward is set to 0; the RM's
    optimizer settings (as train_rm.py's options of the same names)."""
    train: list[dict]
    val: list[dict]
    labeler: Scorer
    temperature: float | None
    demos: list[dict]
    normalize_gain: bool
    collect: CollectSettings
    weight_decay: float
    prompts_per_batch: int
    grad_clip: float


class IteratedRLHF:
    """The rounds of one PPO run. `config`: train_ppo.py's (iterations, round_prompts, round_rm_epochs,
    round_rm_lr, seed); n_rounds: the rounds it does (--rounds, or 1 without a labeler); `inputs`: the RoundInputs
    (None with one round); `judge`: for the RM's held-out accuracy against it only (None: none)."""

    def __init__(self, config, n_rounds: int, inputs: RoundInputs | None, tok, rt, judge: Scorer | None = None):
        self.config, self.n_rounds, self.inputs, self.tok, self.rt = config, n_rounds, inputs, tok, rt
        self.per_round = -(-config.iterations // n_rounds)  # ceil
        self.first_round = None  # the policy's weights at the end of the first round
        self.new = []  # comparisons sampled from the policy in later rounds
        if n_rounds > 1:
            self.temperature = inputs.temperature
            prompts = [c["prompt"] for c in inputs.val]
            # the world's gold labeler knows only world prompts: gold accuracy only where it can score them
            self.judge = judge if judge is None or judge.name != "world" or all(map(is_world_prompt, prompts)) else None

    def state(self, rm) -> dict:
        """What resuming needs: the RM as the rounds so far left it, their comparisons, the labeler temperature,
        the policy at the end of the first round."""
        if self.n_rounds <= 1:
            return {}
        return {"reward_model": rm.state_dict(), "round_comparisons": self.new,
                "labeler_temperature": self.temperature,
                **({"first_round_policy": self.first_round} if self.first_round is not None else {})}

    def load_state(self, rm, state: dict):
        if self.n_rounds > 1 and "reward_model" in state:
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
        return self.n_rounds > 1 and it > 0 and it % self.per_round == 0

    def round_rng(self, r: int) -> np.random.Generator:
        """The generator of round r (0-based): the same on every rank, and the same after a resume."""
        return np.random.default_rng([self.config.seed, 3, r])

    def run_round(self, rm, policy, it: int) -> tuple[torch.nn.Module, dict]:
        """Collect, label, train, normalise; returns the new frozen RM and what to log."""
        inputs, rt, r = self.inputs, self.rt, it // self.per_round
        rng = self.round_rng(r)
        if self.first_round is None:
            self.first_round = {k: v.detach().clone() for k, v in policy.state_dict().items()}
        collect = CollectSettings(**{**inputs.collect.asdict(), "seed": inputs.collect.seed + 1000 * r})
        idx = rng.choice(len(inputs.train), min(self.config.round_prompts, len(inputs.train)), replace=False)
        rows = [{"prompt": inputs.train[i]["prompt"], "family": inputs.train[i].get("family", "")} for i in idx]
        new, self.temperature = collect_comparisons(policy, self.tok, rows, collect, rt, rng, inputs.labeler,
                                                    temperature=self.temperature)
        check_ranks_agree([new, self.temperature], f"round {r + 1}'s comparisons", rt)
        self.new += new
        rm = copy.deepcopy(rm).requires_grad_(True)
        train_acc = train_more(rm, self.tok, inputs.train + self.new, self.config.round_rm_epochs,
                               self.config.round_rm_lr, inputs, rt, rng)
        normalize(rm, self.tok, inputs.demos, gain_samples(new, collect.seed) if inputs.normalize_gain else None, rt)
        check_ranks_agree(rm.state_dict(), f"the reward model after round {r + 1}", rt)
        held_out = rm_report(inputs.val, rm_rewards(rm, self.tok, inputs.val, rt), self.judge, self.temperature)
        stats = {"round": r + 1, "rm_train_accuracy": train_acc, "n_comparisons": len(inputs.train) + len(self.new),
                 "rm_accuracy_vs_labels": held_out["accuracy_vs_labels"]}
        if "accuracy_vs_gold" in held_out:
            stats["rm_accuracy_vs_gold"] = held_out["accuracy_vs_gold"]
        print0(f"round {r + 1}: {len(new)} new comparisons from the policy; RM validation accuracy "
               + ", ".join(f"{k[len('rm_accuracy_'):].replace('_', ' ')} {v:.3f}" for k, v in stats.items()
                           if k.startswith("rm_accuracy")))
        return rm.eval().requires_grad_(False), stats

