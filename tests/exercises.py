"""The "break it" exercises of docs/exercises.md: each is one line of the code changed, and the test that catches it.

A break is applied by rewriting the one line in the function's own source and swapping the function's code object
for the rewritten one, so every module that imported the function runs the broken line, exactly as if the file
had been edited; undo puts the original code back. The line must be found verbatim, once: if the code changes,
the exercise fails loudly instead of drifting from it (tests/test_exercises.py).

    MINIGPT_RLHF_BREAK=late_score python -m pytest tests/test_ppo_math.py   # the suite with one break applied
"""

from __future__ import annotations
import __future__

import importlib
import inspect
import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Exercise:
    name: str
    title: str
    module: str  # where the function lives
    function: str  # its qualified name in the module (Class.method for a method)
    old: str  # the line as it is (stripped of its indentation)
    new: str  # the line broken
    test: str  # the pytest node id of the test that catches it


EXERCISES = [
    Exercise("late_score", "The RM score one token late, on the first pad", "minigpt_rlhf.ppo", "kl_penalized_rewards",
             "is_last = (positions[None, :] == last_token_index(response_mask)[:, None]) & valid  # (B, T)",
             "is_last = positions[None, :] == last_token_index(response_mask)[:, None] + 1  # (B, T)",
             "tests/test_ppo_math.py::test_kl_penalized_rewards_put_score_on_eos_and_nothing_on_pads"),
    Exercise("score_at_t1", "Sample at T = 0.7, score the old log-probs at T = 1", "minigpt_rlhf.rollout",
             "make_rollout",
             "logprobs.append(F.pad(policy_logprobs(score_policy, t, m, p, temperature, banned_ids).float(), back))",
             "logprobs.append(F.pad(policy_logprobs(score_policy, t, m, p, 1.0, banned_ids).float(), back))",
             "tests/test_ppo_loop.py::test_ratio_is_exactly_one_on_the_first_minibatch_of_the_first_epoch[0.7]"),
    Exercise("unmasked_mean", "The response mask dropped from the policy loss's mean", "minigpt_rlhf.ppo",
             "policy_loss",
             "loss = aggregate_loss(torch.max(pg_loss1, pg_loss2), response_mask, aggregate, max_len)",
             "loss = torch.max(pg_loss1, pg_loss2).mean()",
             "tests/test_ppo_math.py::test_policy_loss_ratio_is_exactly_one_when_policy_unchanged"),
    Exercise("pad_is_eos", "PAD == EOS in the exported reward model", "minigpt_rlhf.export", "gpt2_config",
             '"pad_token_id": tok.pad_id,', '"pad_token_id": tok.eos_id,',
             "tests/test_export.py::test_exported_reward_model_scores_equal_ours_on_a_batch"),
    Exercise("dropout_on", "Dropout left on in PPO's models", "minigpt_rlhf.checkpoint", "load_model",
             "model = model_from_checkpoint(ckpt, tokenizer, where, dropout=0.0).to(device).eval()",
             "model = model_from_checkpoint(ckpt, tokenizer, where).to(device).train()",
             "tests/test_ppo_loop.py::test_rlhf_models_load_without_dropout_so_two_passes_agree_and_the_ratio_is_one"),
    Exercise("unclipped_ratio", "The ratio unclipped", "minigpt_rlhf.ppo", "policy_loss",
             "pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)  # (B, T)",
             "pg_loss2 = -advantages * ratio  # (B, T)",
             "tests/test_ppo_math.py::test_policy_loss_gradient_is_zero_exactly_where_clipped"),
    Exercise("unclipped_value", "The value loss unclipped", "minigpt_rlhf.ppo", "value_loss",
             "loss = 0.5 * masked_mean(torch.max(vf_loss1, vf_loss2), response_mask)",
             "loss = 0.5 * masked_mean(vf_loss1, response_mask)",
             "tests/test_ppo_math.py::test_value_loss_takes_larger_of_clipped_and_unclipped"),
    Exercise("swapped_pair", "Chosen and rejected swapped in the pairwise reader", "minigpt_rlhf.comparisons",
             "read_comparisons",
             'responses, ranking = [obj.get("chosen"), obj.get("rejected")], [0, 1]',
             'responses, ranking = [obj.get("chosen"), obj.get("rejected")], [1, 0]',
             "tests/test_reward.py::test_pairwise_lines_are_k_equals_2"),
]
BY_NAME = {e.name: e for e in EXERCISES}


def target(ex: Exercise):
    """The plain function the exercise edits (decorators such as torch.no_grad unwrapped)."""
    obj = importlib.import_module(ex.module)
    for part in ex.function.split("."):
        obj = getattr(obj, part)
    return inspect.unwrap(obj)


def broken_code(ex: Exercise):
    """The function's code with its one line replaced: its source, the line swapped (keeping its indentation),
    compiled in its module's globals."""
    fn = target(ex)
    lines = textwrap.dedent(inspect.getsource(fn)).splitlines()
    hits = [i for i, line in enumerate(lines) if line.strip() == ex.old]
    if len(hits) != 1:
        raise LookupError(f"{ex.module}.{ex.function}: the line {ex.old!r} is there {len(hits)} times, not once: "
                          "the code changed, update the exercise (tests/exercises.py, docs/exercises.md)")
    i = hits[0]
    lines[i] = lines[i][: len(lines[i]) - len(lines[i].lstrip())] + ex.new
    while lines[0].lstrip().startswith("@"):  # the decorators stay on the original object
        lines.pop(0)
    source = "\n".join(lines)
    namespace: dict = {}
    flags = __future__.annotations.compiler_flag  # as the project's modules, annotations stay strings
    exec(compile(source, inspect.getsourcefile(fn), "exec", flags=flags, dont_inherit=True), fn.__globals__,
         namespace)
    return namespace[fn.__name__].__code__


def apply(name: str):
    """Break the code (in this process). Returns a function that undoes it."""
    ex = BY_NAME[name]
    fn = target(ex)
    original = fn.__code__
    fn.__code__ = broken_code(ex)

    def undo():
        fn.__code__ = original

    return undo
