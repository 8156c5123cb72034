#!/usr/bin/env bash
# Preemption and shutdown handler: drains the supervisor, waits for it to
# exit, then unmounts the bucket. Use it as a Compute Engine shutdown-script
# or a Kubernetes preStop hook.
#
#   1. With RENDER_ADMIN_TOKEN set, POSTs /api/drain to the supervisor at
#      RENDER_HOST:RENDER_PORT (expects 202). Otherwise, or if that fails,
#      sends SIGTERM to the PID in RENDER_PID_FILE (data/supervisor.pid).
#   2. Waits until the supervisor has exited, at most RENDER_SHUTDOWN_WAIT_SECONDS
#      (default RENDER_DRAIN_GRACE_SECONDS + 5, that is 30).
#   3. Unmounts RENDER_BUCKET_DIR with fusermount -u if it is mounted.
# Exits 0 when the supervisor is gone, 1 when it outlived the wait.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'shutdown-script: %s\n' "$*" >&2; }

port="${RENDER_PORT:-8080}"
host="${RENDER_HOST:-127.0.0.1}"
case "$host" in
  0.0.0.0 | '') host=127.0.0.1 ;;
  ::) host='[::1]' ;;
  *:*) host="[$host]" ;;
esac
base_url="http://$host:$port"
grace_seconds="${RENDER_DRAIN_GRACE_SECONDS:-25}"
wait_seconds="${RENDER_SHUTDOWN_WAIT_SECONDS:-$((grace_seconds + 5))}"
pid_file="${RENDER_PID_FILE:-data/supervisor.pid}"

# The HTTP status of a request, or 000 when nothing answered.
http_status() {
  local method="$1" url="$2"
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X "$method" \
      -H "Authorization: Bearer ${RENDER_ADMIN_TOKEN:-}" "$url" || true
  else
    node -e '
      const [method, url, token] = process.argv.slice(1);
      const req = require("http").request(url, {
        method, timeout: 10000, headers: { authorization: "Bearer " + token },
      }, (res) => { console.log(res.statusCode); res.resume(); });
      req.on("timeout", () => req.destroy());
      req.on("error", () => console.log("000"));
      req.end();
    ' "$method" "$url" "${RENDER_ADMIN_TOKEN:-}"
  fi
}

supervisor_pid() {
  [[ -r "$pid_file" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$pid_file")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && printf '%s' "$pid"
}

# True while the supervisor runs: its PID lives (an exited process its
# parent has not reaped yet counts as gone), or (no PID known) its port
# still answers.
supervisor_running() {
  if [[ -n "$pid" ]]; then
    kill -0 "$pid" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
  else
    [[ "$(http_status GET "$base_url/healthz")" != 000 ]]
  fi
}

pid="$(supervisor_pid || true)"
asked=false
if [[ -n "${RENDER_ADMIN_TOKEN:-}" ]]; then
  status="$(http_status POST "$base_url/api/drain")"
  if [[ "$status" == 202 ]]; then
    log "drain accepted by $base_url"
    asked=true
  else
    log "POST $base_url/api/drain answered $status; falling back to SIGTERM"
  fi
fi
if [[ "$asked" == false && -n "$pid" ]]; then
  log "sending SIGTERM to supervisor $pid"
  kill -TERM "$pid"
  asked=true
fi
if [[ "$asked" == false ]]; then
  log "no supervisor to drain (no admin token answered, no live PID in $pid_file)"
fi

exited=true
if [[ "$asked" == true ]]; then
  deadline=$((SECONDS + wait_seconds))
  while supervisor_running; do
    if ((SECONDS >= deadline)); then
      exited=false
      log "supervisor still running after ${wait_seconds} s"
      break
    fi
    sleep 1
  done
  [[ "$exited" == true ]] && log "supervisor exited"
fi

bucket_dir="${RENDER_BUCKET_DIR:-}"
if [[ -n "$bucket_dir" ]] && mountpoint -q "$bucket_dir" 2>/dev/null; then
  unmount=(fusermount -u)
  command -v fusermount >/dev/null 2>&1 || unmount=(fusermount3 -u)
  if "${unmount[@]}" "$bucket_dir"; then
    log "unmounted $bucket_dir"
  else
    log "could not unmount $bucket_dir (still in use?)"
    exited=false
  fi
fi

[[ "$exited" == true ]]
