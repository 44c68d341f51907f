#!/bin/bash
# One machine, all its GPUs, without SLURM: Lightning's DDP launched by torchrun.
#   bash experiments/cluster/torchrun.sh experiments/configs/coco.yaml [key=value ...]
set -euo pipefail
GPUS=${GPUS:-$(nvidia-smi --list-gpus | wc -l)}
torchrun --standalone --nproc_per_node="${GPUS}" -m experiments.run "$@" \
  trainer.accelerator=gpu trainer.devices="${GPUS}" trainer.strategy=ddp name="${RUN_NAME:-torchrun-$(date +%Y%m%d-%H%M%S)}"
