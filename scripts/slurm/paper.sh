#!/bin/bash
# Run a fusebench recipe on a SLURM cluster: one task per node, each node starting `accelerate launch` for its GPUs.
#
#   sbatch scripts/slurm/paper.sh                                   # recipes/paper.yaml on 1 node x 8 GPUs
#   sbatch --nodes 2 scripts/slurm/paper.sh recipes/paper.yaml      # 2 nodes x 8 GPUs
#   ACCELERATE_CONFIG=configs/accelerate/fsdp.yaml sbatch scripts/slurm/paper.sh recipes/paper_ablation_avgce.yaml
#
# Every node must see the same checkout, virtual environment and workdir (a shared filesystem): the stage cache
# under $WORKDIR is how a resubmitted job continues where the last one stopped. Extra arguments after the recipe
# are passed to `fusebench run` (overrides such as models.fusellm.train.lr=2e-5, or --only extract:).
# See docs/PAPER.md for costs and the mapping of recipe knobs to the paper.
#SBATCH --job-name=fusebench
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --mem=0
#SBATCH --time=48:00:00
#SBATCH --output=logs/slurm-%x-%j.out
#SBATCH --requeue

set -euo pipefail

RECIPE=${1:-recipes/paper.yaml}
shift || true
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-configs/accelerate/deepspeed_zero2.yaml}
WORKDIR=${WORKDIR:-runs/$(basename "$RECIPE" .yaml)}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
VENV=${VENV:-.venv}

cd "${SLURM_SUBMIT_DIR:-$(pwd)}"
mkdir -p logs
# shellcheck disable=SC1091
source "$VENV/bin/activate"

NNODES=${SLURM_NNODES:-1}
MASTER_ADDR=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" | head -n 1)
MASTER_PORT=${MASTER_PORT:-$((29500 + ${SLURM_JOB_ID:-0} % 1000))}
export MASTER_ADDR MASTER_PORT
export TOKENIZERS_PARALLELISM=false
export NCCL_ASYNC_ERROR_HANDLING=1

echo "fusebench: $RECIPE on $NNODES node(s) x $GPUS_PER_NODE GPUs, config $ACCELERATE_CONFIG, workdir $WORKDIR"

# Preflight on the submit node: the recipe is valid and the config's backend (DeepSpeed) imports; fusebench names the
# install command otherwise (exit 2), before any node starts.
python -m fusebench.cli plan "$RECIPE" --workdir "$WORKDIR" --accelerate-config "$ACCELERATE_CONFIG" \
  > "logs/plan-${SLURM_JOB_ID:-local}.txt"

# One srun task per node; SLURM_NODEID gives each node its machine rank. The single quotes keep
# $SLURM_NODEID unexpanded until it runs on each node.
srun --kill-on-bad-exit=1 bash -c '
  accelerate launch \
    --config_file "'"$ACCELERATE_CONFIG"'" \
    --num_machines "'"$NNODES"'" \
    --num_processes "'"$((NNODES * GPUS_PER_NODE))"'" \
    --machine_rank "$SLURM_NODEID" \
    --main_process_ip "'"$MASTER_ADDR"'" \
    --main_process_port "'"$MASTER_PORT"'" \
    --rdzv_backend static \
    -m fusebench.cli run "'"$RECIPE"'" --workdir "'"$WORKDIR"'" "$@"
' _ "$@"
