#!/usr/bin/env bash
# Installs whatever the farm needs and is missing, then builds it. Safe to run
# again: each step checks first and does nothing when its work is done.
#   - Debian packages: chromium, poppler-utils, qpdf, fonts (apt-get; as root
#     or through sudo)
#   - npm dependencies (npm ci, when package-lock.json changed)
#   - the TypeScript build (incremental)
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(chromium poppler-utils qpdf fonts-liberation2 fonts-noto-core
  fonts-noto-cjk fonts-noto-color-emoji shellcheck procps fontconfig)

missing_packages() {
  local pkg
  for pkg in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
      printf '%s\n' "$pkg"
  done
}

install_debian_packages() {
  command -v dpkg-query >/dev/null || {
    echo "setup: not a Debian system; install chromium, poppler-utils, qpdf and the Noto and Liberation fonts yourself" >&2
    return 0
  }
  local missing
  mapfile -t missing < <(missing_packages)
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "setup: installing Debian packages (a few minutes the first time): ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
      echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_node_modules() {
  local stamp=node_modules/.package-lock.json
  if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
    echo "setup: installing npm dependencies (npm ci; a few minutes the first time)"
    npm ci --no-audit --no-fund
  fi
  # A native module built for another Node version (or skipped install
  # scripts) shows up here, not at install time.
  if ! node -e "require('better-sqlite3')(':memory:').close()" 2>/dev/null; then
    echo "setup: rebuilding better-sqlite3 for $(node --version)"
    npm rebuild better-sqlite3
  fi
}

build() {
  npx tsc -p tsconfig.json
}

install_debian_packages
install_node_modules
build
