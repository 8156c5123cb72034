#!/usr/bin/env bash
# Container entry point. Optionally mounts a Cloud Storage bucket (when both
# RENDER_BUCKET and RENDER_BUCKET_DIR are set): the bucket's `static/` folder
# is searched after the image's own static files, and linked documents are
# written to its `output/` folder. Then it becomes the supervisor (exec keeps
# the PID, so tini's SIGTERM reaches node directly) and records that PID in
# RENDER_PID_FILE (default data/supervisor.pid) for scripts/shutdown-script.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'docker-entrypoint: %s\n' "$*" >&2; }

if [[ -n "${RENDER_BUCKET:-}" && -n "${RENDER_BUCKET_DIR:-}" ]]; then
  scripts/mount-bucket.sh "$RENDER_BUCKET" "$RENDER_BUCKET_DIR"
  bucket_static="$RENDER_BUCKET_DIR/static"
  if [[ -d "$bucket_static" ]]; then
    export RENDER_STATIC_DIRS="${RENDER_STATIC_DIRS:-static}:$bucket_static"
  else
    log "no $bucket_static folder in the bucket; static files from the image only"
  fi
  export RENDER_OUTPUT_DIR="$RENDER_BUCKET_DIR/output"
  mkdir -p "$RENDER_OUTPUT_DIR"
  log "bucket gs://$RENDER_BUCKET mounted on $RENDER_BUCKET_DIR; output to $RENDER_OUTPUT_DIR"
elif [[ -n "${RENDER_BUCKET:-}${RENDER_BUCKET_DIR:-}" ]]; then
  log "set both RENDER_BUCKET and RENDER_BUCKET_DIR to mount a bucket (got only one)"
  exit 64
fi

pid_file="${RENDER_PID_FILE:-data/supervisor.pid}"
mkdir -p "$(dirname "$pid_file")"
printf '%s\n' "$$" >"$pid_file"
exec node bin/render-farm.js start "$@"
