#!/usr/bin/env bash
# `make run`: starts vigil-aggregator and vigil-agent on this host with built-in defaults (no
# external services; plaintext RPC on loopback, which both binaries allow without
# --insecure_plaintext; see docs/transport.md), prints where to look, and on Ctrl-C stops both and checks that no vigil
# BPF program or link is left in the kernel.
set -uo pipefail
BUILD=${1:-build}
BIN="$(cd "$BUILD/bin" && pwd)"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo"
  echo "vigil: the agent loads BPF programs, so it runs under sudo"
fi
RUNDIR=$(mktemp -d /tmp/vigil-run.XXXXXX)
AGG_RPC=${VIGIL_RPC_PORT:-9470}
AGG_HTTP=${VIGIL_AGG_HTTP_PORT:-9471}
AGENT_HTTP=${VIGIL_AGENT_HTTP_PORT:-9472}
INTERVAL=${VIGIL_INTERVAL:-10s}

"$BIN/vigil-aggregator" --rpc_port="$AGG_RPC" --http_port="$AGG_HTTP" \
  --ready_file="$RUNDIR/aggregator.ready" --data_dir="$RUNDIR/aggregator-data" \
  >"$RUNDIR/aggregator.log" 2>&1 &
AGG_PID=$!
$SUDO "$BIN/vigil-agent" --aggregator="127.0.0.1:$AGG_RPC" --http_port="$AGENT_HTTP" \
  --interval="$INTERVAL" --spool_dir="$RUNDIR/agent-spool" --ready_file="$RUNDIR/agent.ready" \
  >"$RUNDIR/agent.log" 2>&1 &
AGENT_PID=$!

TAIL_PID=""
stop() {
  trap - INT TERM
  [[ -n "$TAIL_PID" ]] && kill "$TAIL_PID" 2>/dev/null
  echo
  echo "vigil: stopping agent and aggregator"
  $SUDO kill -TERM "$AGENT_PID" 2>/dev/null
  kill -TERM "$AGG_PID" 2>/dev/null
  wait "$AGENT_PID" "$AGG_PID" 2>/dev/null
  # The kernel frees a program shortly after its last reference goes (deferred work), so a
  # check right after the agent exits can still list them: look again for up to 3 s.
  for _ in $(seq 1 30); do
    left=$($SUDO bpftool prog show 2>/dev/null | grep -c 'name vigil_' || true)
    [[ "$left" == "0" ]] && break
    sleep 0.1
  done
  if [[ "$left" == "0" ]]; then
    echo "vigil: stopped; no vigil BPF programs left in the kernel (bpftool prog show)"
  else
    echo "vigil: WARNING: $left vigil BPF program(s) still loaded" >&2
  fi
  echo "vigil: logs kept in $RUNDIR"
  exit 0
}
trap stop INT TERM

for _ in $(seq 1 100); do
  if [[ -s "$RUNDIR/aggregator.ready" && -s "$RUNDIR/agent.ready" ]]; then break; fi
  if ! kill -0 "$AGG_PID" 2>/dev/null; then
    echo "vigil: the aggregator did not start:" >&2; cat "$RUNDIR/aggregator.log" >&2; exit 1
  fi
  if ! $SUDO kill -0 "$AGENT_PID" 2>/dev/null; then
    echo "vigil: the agent did not start:" >&2; cat "$RUNDIR/agent.log" >&2
    kill "$AGG_PID"; exit 1
  fi
  sleep 0.2
done

cat <<MSG

vigil is running (interval $INTERVAL; logs in $RUNDIR).

  aggregator metrics  http://127.0.0.1:$AGG_HTTP/metrics
  fleet               http://127.0.0.1:$AGG_HTTP/api/v1/agents
  agent metrics       http://127.0.0.1:$AGENT_HTTP/metrics
  agent health        http://127.0.0.1:$AGENT_HTTP/healthz

Try:
  timeout 5 sh -c 'while :; do :; done' &      # burn some CPU
  curl -s 127.0.0.1:$AGG_HTTP/metrics | grep vigil_process_cpu_seconds_total | sort -k2 -g | tail

Ctrl-C stops both.
MSG
tail -f "$RUNDIR/aggregator.log" "$RUNDIR/agent.log" &
TAIL_PID=$!
wait "$AGG_PID" "$AGENT_PID"
kill "$TAIL_PID" 2>/dev/null
stop
