#!/usr/bin/env bash
# Data-parallel SFT throughput, 1 process vs 2 (gloo on CPU, NCCL where there are GPUs), the same total batch
# and the same number of cores: 1 process x 2 threads against 2 processes x 1 thread.
#     bash bench/bench_ddp.sh            # extra arguments go to bench_ddp.py, e.g. --batch_size=64
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
OMP_NUM_THREADS=2 "$PY" -m torch.distributed.run --nproc_per_node=1 --master_port="$(port)" bench/bench_ddp.py --threads=2 "$@"
OMP_NUM_THREADS=1 "$PY" -m torch.distributed.run --nproc_per_node=2 --master_port="$(port)" bench/bench_ddp.py --threads=1 "$@"
