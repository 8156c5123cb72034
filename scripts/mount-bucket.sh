#!/usr/bin/env bash
# Mounts a Cloud Storage bucket with gcsfuse:  mount-bucket.sh BUCKET DIR
# Credentials: GOOGLE_APPLICATION_CREDENTIALS (a service account key file),
# else the machine's service account (Compute Engine, GKE workload identity).
# Does nothing when DIR is already a mount point. Exits non-zero, saying
# what is missing, when gcsfuse, the credentials or the mount fail.
set -euo pipefail

die() {
  printf 'mount-bucket: %s\n' "$*" >&2
  exit 1
}

[[ $# -eq 2 ]] || die "usage: mount-bucket.sh BUCKET DIR (got $# arguments)"
bucket="${1#gs://}"
dir="$2"
[[ "$bucket" =~ ^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$ ]] ||
  die "bucket: got \"$1\", expected a bucket name such as my-render-output"

command -v gcsfuse >/dev/null 2>&1 ||
  die "gcsfuse is not installed (build the image with --build-arg WITH_GCSFUSE=true, see docs/deploy.md)"

key_args=()
if [[ -n "${GOOGLE_APPLICATION_CREDENTIALS:-}" ]]; then
  [[ -r "$GOOGLE_APPLICATION_CREDENTIALS" ]] ||
    die "GOOGLE_APPLICATION_CREDENTIALS: cannot read \"$GOOGLE_APPLICATION_CREDENTIALS\""
  key_args=(--key-file "$GOOGLE_APPLICATION_CREDENTIALS")
elif ! getent hosts metadata.google.internal >/dev/null 2>&1; then
  die "no credentials: set GOOGLE_APPLICATION_CREDENTIALS to a key file, or run on Google Cloud with a service account"
fi

mkdir -p "$dir" || die "cannot create mount point $dir"
if mountpoint -q "$dir"; then
  printf 'mount-bucket: %s is already mounted\n' "$dir" >&2
  exit 0
fi

if ! gcsfuse --implicit-dirs "${key_args[@]}" "$bucket" "$dir"; then
  die "gcsfuse could not mount gs://$bucket on $dir: check that the bucket exists, that the service account may read and write it, and that /dev/fuse is available (docker run --device /dev/fuse --cap-add SYS_ADMIN)"
fi
printf 'mount-bucket: mounted gs://%s on %s\n' "$bucket" "$dir" >&2
