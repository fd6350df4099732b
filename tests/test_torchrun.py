"""The three stages under `torchrun --nproc_per_node=2` (gloo on CPU): they finish, and rank 0 alone writes."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(Path(sys.executable).parent / "torchrun"),
                    reason="torchrun not installed")
def test_all_three_stages_run_under_torchrun_with_two_processes(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [torchrun, "--nproc_per_node=2", f"--master_port={port}", "train_ppo.py", "--preset=tiny",
           f"--out_dir={tmp_path}", "--device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("base", "sft", "rm", "ppo"):
        assert (tmp_path / stage / "model.pt").exists()
    # one writer: each log has exactly one line per step, not one per rank
    sft_steps = len((tmp_path / "sft" / "log.jsonl").read_text().splitlines())
    assert sft_steps == 20
    ppo_log = [json.loads(x) for x in (tmp_path / "ppo" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in ppo_log] == [0, 1]
    # rank 0 alone prints the final table
    assert proc.stdout.count("gold win rate of PPO over SFT") == 1
