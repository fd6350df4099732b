"""README's "Your own data" commands, copied from README.md word for word and run in order on a dataset that is
not the world, at tiny sizes (--preset=tiny, which keeps the default's rounds and value model). With comparisons
brought as a file there is no labeler for the later rounds: PPO says so before any work and does one round; with a
labeler, on the RM or on PPO itself, it does every round."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_own_data import write_user_dataset

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every stage as a command, end to end

ONE_ROUND = "This run does one round"


def own_data_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## Your own data", 1)[1].split("\n## ", 1)[0]


def readme_commands() -> tuple[list[str], list[str], str]:
    """(the commands of the section's bash blocks in order, its inline `python train_*.py` commands, the source
    of its my_judge.py block)."""
    section = own_data_section()
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    commands = [line.strip() for b in blocks for line in b.splitlines() if line.strip().startswith("python")]
    inline = [c for c in re.findall(r"`(python train_\w+\.py [^`]*)`", section) if "/path/" not in c]
    judge = re.search(r"```python\n(# my_judge\.py\n.*?)```", section, re.S).group(1)
    return commands, inline, judge


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """A README command as a user's shell runs it, at tiny sizes: train_*.py get --preset=tiny --device=cpu."""
    if re.match(r"python train_\w+\.py", command):
        command += " --preset=tiny --device=cpu"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def ppo_rounds(out: Path) -> list[int]:
    log = [json.loads(line) for line in (out / "ppo" / "log.jsonl").read_text().splitlines()]
    return [row["round"] for row in log if "round" in row]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A user's folder: my_data/ with every file README names (pairs.jsonl the comparisons), my_judge.py as README
    writes it, and the scripts (as in a clone, run from its root)."""
    root = tmp_path_factory.mktemp("user")
    write_user_dataset(root / "my_data")
    shutil.move(root / "my_data" / "comparisons.jsonl", root / "my_data" / "pairs.jsonl")
    for script in ROOT.glob("*.py"):
        (root / script.name).symlink_to(script)
    _, _, judge = readme_commands()
    (root / "my_judge.py").write_text(judge, encoding="utf-8")
    return root


def test_the_section_shows_the_commands_this_test_runs():
    commands, inline, _ = readme_commands()
    assert [c.split()[1] for c in commands] == ["-m", "train_sft.py", "train_rm.py", "train_ppo.py", "train_ppo.py",
                                                "train_rm.py", "train_ppo.py"]
    assert len(inline) == 1 and "--labeler=my_judge.py:score" in inline[0]


def test_readmes_own_data_commands_run_word_for_word(folder):
    (tokenize, sft, rm_pairs, ppo, ppo_judged, rm_labeled, ppo_labeled), (ppo_given_labeler,), _ = readme_commands()
    out = folder / "out_mine"
    for command in (tokenize, sft, rm_pairs):
        run(command, folder)
    assert json.loads((out / "rm" / "eval.json").read_text())["n_train_prompts"] > 0
    # comparisons brought as a file: no labeler, so one round, said before any work
    for command in (ppo, ppo_judged):
        stdout = run(command, folder).stdout
        assert ONE_ROUND in stdout and "--labeler=module:function" in stdout
        assert stdout.index(ONE_ROUND) < stdout.index("PPO: ")  # before the first iteration
        assert ppo_rounds(out) == [] and not (out / "ppo" / "rm.pt").exists()
    assert json.loads((out / "ppo" / "eval.json").read_text())["judge"] == "my_judge.py:score"
    # the same RM, with a labeler given to PPO: every round, ranked by it
    stdout = run(ppo_given_labeler, folder).stdout
    assert ONE_ROUND not in stdout and "labeler: my_judge.py:score ranks the policy's samples" in stdout
    assert ppo_rounds(out) == [2]
    new = [json.loads(line) for line in (out / "ppo" / "round_comparisons.jsonl").read_text().splitlines()]
    rm_prompts = {json.loads(line)["prompt"] for line in (folder / "my_data" / "pairs.jsonl").read_text().splitlines()}
    assert new and {c["prompt"] for c in new} <= rm_prompts
    # an RM whose comparisons the user's labeler ranked: PPO's rounds use the same labeler
    run(rm_labeled, folder)
    stdout = run(ppo_labeled, folder).stdout
    assert ONE_ROUND not in stdout and "labeler: my_judge.py:score (the RM's)" in stdout
    assert ppo_rounds(out) == [2]
