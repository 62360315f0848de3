#!/usr/bin/env bash
# Runs N processes of paw_jax on this machine, joined through jax.distributed the way N hosts are.
#
#   launch/local.sh [--dry-run] N CONFIG WORKDIR [--config.a.b=value ...]
#   JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=4 launch/local.sh 2 configs/default.py runs/x2
#
# A single process already uses every device of a machine (`python -m paw_jax.main`); this runs a config's
# multi-host path on one machine before a pod or cluster run. Process K gets PAW_COORDINATOR=127.0.0.1:PORT (a free
# port, or PAW_PORT), PAW_NUM_PROCESSES=N and PAW_PROCESS_ID=K, and writes to WORKDIR/logs/process_K.log; process 0's
# log is shown here. Each process sees every device of the machine: on the CPU, XLA_FLAGS as above gives each 4
# devices. The script waits for all of them; when one exits with an error (or on Ctrl-C) it stops the others and
# exits with that status. PAW_MAIN_MODULE runs another module than paw_jax.main with the same arguments (the tests'
# probe). --dry-run prints the commands instead of running them.
set -euo pipefail

# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "$0")/common.sh"
if [[ ${1:-} == --dry-run ]]; then DRY_RUN=1; shift; fi
if (($# < 3)); then
  sed -n '2,/^set /{/^#/p}' "$0" >&2
  exit 2
fi
N=$1 CONFIG=$2 WORKDIR=$3
shift 3
if [[ ! $N =~ ^[1-9][0-9]*$ ]]; then
  echo "local.sh: N must be a number of processes >= 1, got '$N'" >&2
  exit 2
fi
if [[ $WORKDIR == *://* ]]; then
  echo "local.sh: the logs go to WORKDIR/logs, so WORKDIR must be a local directory, got '$WORKDIR'" >&2
  exit 2
fi
logs=$WORKDIR/logs
port=${PAW_PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
pids=()

# start LOG CMD...: CMD in the background with its output to LOG; under --dry-run prints the line that would.
start() {
  local log=$1
  shift
  if [[ -n $DRY_RUN ]]; then
    echo "$(quote "$@") > $(quote "$log") 2>&1 &"
  else
    "$@" > "$log" 2>&1 &
    pids+=($!)
  fi
}

# stop: ends the processes still running and the log follower, and reaps them. TERM first, then KILL those left
# after 5 s: a process that joined jax.distributed takes TERM as a preemption notice (JAX's preemption service) and
# goes on.
stop() {
  local pid left _
  for pid in "${pids[@]}" ${follower:+"$follower"}; do kill -TERM "$pid" 2> /dev/null || true; done
  for _ in {1..10}; do
    left=0
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2> /dev/null; then left=1; fi
    done
    if ((!left)); then break; fi
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2> /dev/null || true; done
  wait
}

run mkdir -p "$logs"
for ((k = 0; k < N; k++)); do
  start "$logs/process_$k.log" env PAW_COORDINATOR="127.0.0.1:$port" PAW_NUM_PROCESSES="$N" PAW_PROCESS_ID="$k" \
    python -m "${PAW_MAIN_MODULE:-paw_jax.main}" --config="$CONFIG" --config.workdir="$WORKDIR" "$@"
done
if [[ -n $DRY_RUN ]]; then exit 0; fi
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
echo "paw_jax: $N processes, coordinator 127.0.0.1:$port, logs in $logs/process_K.log; process 0's:" >&2
tail -n +1 -f "$logs/process_0.log" &
follower=$!

# Poll rather than `wait -n`, which older bash lacks and which does not say which process ended.
while ((${#pids[@]})); do
  sleep 1
  for k in "${!pids[@]}"; do
    if kill -0 "${pids[k]}" 2> /dev/null; then continue; fi
    status=0
    wait "${pids[k]}" || status=$?
    unset 'pids[k]'
    if ((status)); then
      echo "local.sh: process $k exited with status $status; stopping the others. The end of its log:" >&2
      tail -n 20 "$logs/process_$k.log" >&2
      exit "$status"
    fi
  done
done
