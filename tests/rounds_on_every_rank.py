"""Run by tests/test_torchrun.py under torchrun, with train_ppo.py's options: train_ppo.py's main, where every rank
also saves what it holds after each RLHF round (the round's comparisons, the labeler temperature and the RM's
weights) as {out_dir}/rank{r}_round{n}.pt, for the test to compare rank by rank. It records and changes nothing."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import train_ppo  # noqa: E402
from minigpt_rlhf import iterated  # noqa: E402
from minigpt_rlhf.config import parse_config  # noqa: E402

run_round = iterated.IteratedRLHF.run_round


def recorded_round(self, rm, policy, it):
    rm, stats = run_round(self, rm, policy, it)
    held = {"comparisons": self.new, "temperature": self.temperature, "rm": rm.state_dict()}
    torch.save(held, os.path.join(self.config.out_dir, f"rank{self.rt.rank}_round{stats['round']}.pt"))
    return rm, stats


if __name__ == "__main__":
    iterated.IteratedRLHF.run_round = recorded_round
    train_ppo.main(parse_config(train_ppo.Config, presets=train_ppo.PRESETS))
