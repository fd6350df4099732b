"""Every "break it" exercise of docs/exercises.md: its line is in the code, the page shows it, and the test it names
fails with the line broken and passes without it. Each break runs its named test in a pytest process of its own
(MINIGPT_RLHF_BREAK, tests/conftest.py), so the break never leaks into another test."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from exercises import EXERCISES, apply, broken_code, target

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "exercises.md").read_text(encoding="utf-8")


def run_tests(node_ids, break_name=None):
    env = {**os.environ, "MINIGPT_RLHF_BREAK": break_name or ""}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *node_ids], cwd=ROOT,
                          env=env, capture_output=True, text=True)


@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: e.name)
def test_each_exercise_line_is_in_the_code_once_and_on_the_page(ex):
    broken_code(ex)  # raises if the line is not found exactly once
    assert f"`{ex.old}`" in PAGE and f"`{ex.new}`" in PAGE, f"docs/exercises.md must show both lines of {ex.name}"
    assert ex.test in PAGE, f"docs/exercises.md must name {ex.test}"


def test_a_break_changes_the_function_everywhere_and_undo_restores_it():
    import torch

    from minigpt_rlhf import ppo

    logprobs = torch.zeros(1, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    before, _ = ppo.kl_penalized_rewards(logprobs, logprobs, torch.tensor([2.0]), mask, 0.1)
    undo = apply("late_score")
    try:
        after, _ = ppo.kl_penalized_rewards(logprobs, logprobs, torch.tensor([2.0]), mask, 0.1)
    finally:
        undo()
    assert before.tolist() == [[0.0, 2.0, 0.0]]  # the score on the EOS (the last valid token)
    assert after.tolist() == [[0.0, 0.0, 2.0]]  # one late: on the pad, which GAE's mask keeps from the response
    assert target(EXERCISES[0]).__code__ is not None
    again, _ = ppo.kl_penalized_rewards(logprobs, logprobs, torch.tensor([2.0]), mask, 0.1)
    assert torch.equal(again, before)


@pytest.mark.slow
def test_every_named_test_passes_on_the_code_as_it_is():
    proc = run_tests([e.test for e in EXERCISES])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(rf"\b{len({e.test for e in EXERCISES})} passed", proc.stdout), proc.stdout[-500:]


@pytest.mark.slow
@pytest.mark.parametrize("ex", EXERCISES, ids=lambda e: e.name)
def test_the_named_test_fails_with_the_break(ex):
    proc = run_tests([ex.test], ex.name)
    assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout[-3000:]
