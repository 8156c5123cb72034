#!/usr/bin/env bash
# Container entry point: `docker-entrypoint.sh [COMMAND...]`, the command
# being `render-farm start` when none is given. Optionally mounts a Cloud
# Storage bucket first (when both RENDER_BUCKET and RENDER_BUCKET_DIR are
# set): the bucket's `static/` folder is searched after the image's own
# static files, and linked documents are written to its `output/` folder.
# Then it becomes the command: exec keeps the PID, so tini's SIGTERM reaches
# it directly. (The supervisor writes its own pid file, RENDER_PID_FILE, for
# scripts/shutdown-script.sh.)
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

[[ $# -gt 0 ]] || set -- render-farm start
exec "$@"
