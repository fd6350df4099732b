#!/usr/bin/env bash
# The CUDA path, checked in one run on one GPU, each step under its own time limit (470 s in all by default,
# --time_limit): the CUDA-marked tests, SFT throughput and MFU of the gpu preset (bf16, eager and compiled), one
# PPO iteration of the gpu preset split into generation / scoring / update, and the laptop default pipeline on
# the GPU (bench/gpu_check.py says what each step runs). The last line printed states what was measured.
#     bash bench/gpu_check.sh                  # the report, every figure and the output, goes to $OUT/gpu_check.md
#     bash bench/gpu_check.sh --dry_run        # the same steps at tiny sizes on the CPU: checks the script itself
#     OUT=/tmp/r bash bench/gpu_check.sh --only=sft,ppo
# It installs nothing and needs no network: torch (a CUDA build), numpy, tiktoken, tqdm and pytest must already
# be importable by $PYTHON (default python3), as after `pip install -e ".[test]"`; it stops at once, saying
# which, if one is missing, and stops at once without a CUDA GPU. Exit status 0 only if every step succeeded.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
