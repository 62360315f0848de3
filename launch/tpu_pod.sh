#!/usr/bin/env bash
# Trains a paw_jax config on every worker of a Cloud TPU VM slice (one process per worker, JAX finds its peers).
#
#   launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [--config.a.b=value ...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b configs/alfworld.py:model=qwen2.5-7b,algo=gigpo gs://my-bucket/alfworld-7b
#
# Ships the committed tree (git archive HEAD) to every worker, pip-installs it with the jax[tpu] release of
# launch/versions.sh, then starts `python -m paw_jax.main` detached (log ~/paw_jax.log, pid ~/paw_jax.pid on each
# worker) and follows worker 0's log: Ctrl-C stops following, not the run. Run it again to resume from WORKDIR's
# last checkpoint. Environment passed on to the workers when set: PAW_MODEL_DIR, ALFWORLD_DATA. SKIP_INSTALL=1 skips
# the install. --dry-run prints the commands instead of running them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=SCRIPTDIR/common.sh
source "$ROOT/launch/common.sh"
# shellcheck source=SCRIPTDIR/versions.sh
source "$ROOT/launch/versions.sh"
if [[ ${1:-} == --dry-run ]]; then DRY_RUN=1; shift; fi
if (($# < 4)); then
  sed -n '2,/^set /{/^#/p}' "$0" >&2
  exit 2
fi
TPU=$1 ZONE=$2 CONFIG=$3 WORKDIR=$4
shift 4

tpu() { run gcloud compute tpus tpu-vm "$1" "${@:2}" --zone="$ZONE" --worker=all; }

if [[ -z ${SKIP_INSTALL:-} ]]; then
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/paw_jax.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "shipping paw_jax $(git -C "$ROOT" rev-parse --short HEAD) to $TPU" >&2
  run git -C "$ROOT" archive --format=tar.gz -o "$tmp/paw_jax.tar.gz" HEAD
  tpu scp "$tmp/paw_jax.tar.gz" "$TPU:~/paw_jax.tar.gz"
  tpu ssh "$TPU" --command="rm -rf ~/paw_jax && mkdir ~/paw_jax && tar xzf ~/paw_jax.tar.gz -C ~/paw_jax && cd ~/paw_jax \
&& python3 -m pip install -q \"jax[tpu]==$JAX_VERSION\" -e \".[envs]\""
fi

env_vars="PAW_COORDINATOR=auto"  # paw_jax.distributed: jax.distributed.initialize() reads the pod's metadata
for name in PAW_MODEL_DIR ALFWORLD_DATA; do
  if [[ -n ${!name:-} ]]; then env_vars+=" $(quote "$name=${!name}")"; fi
done
args=$(quote "--config=$CONFIG" "--config.workdir=$WORKDIR" "$@")
tpu ssh "$TPU" --command="cd ~/paw_jax && $env_vars nohup python3 -m paw_jax.main $args > ~/paw_jax.log 2>&1 < /dev/null \
& echo \$! > ~/paw_jax.pid"
echo "stop the run with: gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command='kill \$(cat ~/paw_jax.pid)'" >&2
run gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=0 --command='tail -n +1 -F ~/paw_jax.log'
