"""The two places where a task's idea of a good response plugs in: the labeler and the judge.

- The **labeler** ranks the responses train_rm.py samples when it collects comparisons itself. Its scores
  become noisy rankings through the calibrated Plackett-Luce labeler of labeler.py: that is training data.
  (Whoever brings a comparisons file needs no labeler.)
- The **judge** scores responses for logging and evaluation only, like InstructGPT's held-out labelers.
  Nothing is ever trained on it.

Both are a score function `score(prompt, response) -> float` (higher is better; `prompt` is the raw
instruction, without the template). The instruction world's is its hidden gold labeler (world.gold_score),
which also sees whether a response was cut off before EOS and knows each prompt's task family. A user's own
lives in any Python file:

    # my_judge.py
    def score(prompt: str, response: str) -> float:
        return -abs(len(response.split()) - 20) / 20   # "about twenty words"

    python train_ppo.py --data_dir=my_data --judge=my_judge:score        # a module on the Python path
    python train_ppo.py --data_dir=my_data --judge=path/to/my_judge.py:score

`--judge=auto` (the default) uses the world's gold labeler when every prompt is a world prompt and no judge
otherwise; `--judge=none` turns judging off. The labeler (`--labeler` of train_rm.py) takes the same forms.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .common import print0
from .data import DataError


@dataclass(frozen=True)
class Scorer:
    """A score function with a name. `sees_eos`: fn takes eos= (was the response finished?); `family_of`: the
    task family of a prompt, for per-family breakdowns (None: rows may carry a "family" key instead)."""

    name: str
    fn: Callable
    sees_eos: bool = False
    family_of: Callable[[str], str] | None = None
    ideal_of: Callable[[str], str] | None = None  # prompt -> the best response, if the judge knows it

    def score(self, prompt: str, response: str, ended: bool = True) -> float:
        value = self.fn(prompt, response, eos=ended) if self.sees_eos else self.fn(prompt, response)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{self.name}: score(prompt, response) must return a number, got "
                             f"{type(value).__name__} for prompt {prompt[:60]!r}") from None
        if not math.isfinite(value):
            raise DataError(f"{self.name}: score(prompt, response) returned {value} for prompt {prompt[:60]!r}")
        return value

    def family(self, row: dict) -> str:
        """A row's task family: its own "family" key, else the scorer's family_of, else "all"."""
        if row.get("family"):
            return row["family"]
        return self.family_of(row["prompt"]) if self.family_of is not None else "all"


def world_scorer() -> Scorer:
    """The instruction world's hidden gold labeler."""
    from . import world

    return Scorer("world", world.gold_score, sees_eos=True, family_of=world.family_of, ideal_of=world.ideal_response)


def is_world_prompt(prompt: str) -> bool:
    from .world.gold import parse_prompt

    try:
        parse_prompt(prompt)
    except ValueError:
        return False
    return True


def load_scorer(spec: str, option: str) -> Scorer:
    """A user's `module:function` or `path/to/file.py:function`, with a clear error naming the option."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise DataError(f"--{option}={spec!r}: expected auto, none, module:function or path/to/file.py:function")
    try:
        if where.endswith(".py") or Path(where).is_file():
            path = Path(where)
            if not path.is_file():
                raise DataError(f"--{option}={spec}: file {path} not found")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            if "" not in sys.path:  # a module in the working directory, as `python -m` would find it
                sys.path.insert(0, "")
            module = importlib.import_module(where)
    except ImportError as e:
        raise DataError(f"--{option}={spec}: cannot import {where!r} ({e})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise DataError(f"--{option}={spec}: {where!r} has no function {name!r}")
    return Scorer(spec, fn)


def resolve_judge(spec: str, prompts: Iterable[str]) -> Scorer | None:
    """The judge for --judge=auto|none|module:function, announced in one line. auto: the world's gold labeler
    if every prompt (training and evaluation) is a world prompt, else none."""
    if spec == "none":
        print0("judge: none (--judge=none); reporting what the reward model and the data can measure")
        return None
    if spec == "auto":
        prompts = list(prompts)
        foreign = sum(not is_world_prompt(p) for p in prompts)
        if not foreign:
            print0("judge: the instruction world's gold labeler (every prompt is a world prompt; --judge=none "
                   "turns it off)")
            return world_scorer()
        print0(f"judge: none ({foreign} of {len(prompts)} prompts are not world prompts; "
               "--judge=module:function adds your own)")
        return None
    judge = load_scorer(spec, "judge")
    print0(f"judge: {spec} (logging and evaluation only; never trained on)")
    return judge


def resolve_labeler(spec: str, prompts: Iterable[str]) -> Scorer:
    """The labeler that ranks collected comparisons (--labeler=auto|module:function). auto: the world's gold
    labeler if every prompt is a world prompt; otherwise a clear error, since collecting needs one."""
    if spec == "auto":
        prompts = list(prompts)
        foreign = sum(not is_world_prompt(p) for p in prompts)
        if foreign:
            raise DataError(f"collecting comparisons needs a labeler, and {foreign} of the {len(prompts)} RM "
                             "prompts are not world prompts: run train_rm.py with --labeler=module:function (a "
                             "score(prompt, response) -> float) or with ranked comparisons, --comparisons=FILE")
        return world_scorer()
    if spec == "none":
        raise DataError("--labeler=none: collecting comparisons needs a labeler; pass --labeler=module:function "
                         "or bring ranked comparisons with --comparisons=FILE")
    labeler = load_scorer(spec, "labeler")
    print0(f"labeler: {spec}, ranked through the calibrated Plackett-Luce labeler (labeler.py)")
    return labeler
