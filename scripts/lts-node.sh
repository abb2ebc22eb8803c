#!/usr/bin/env bash
# Prints the directory holding the newest Node LTS's `node` binary, installing it first when missing:
# the npm registry's node-linux-<arch> package (the binaries the nodejs.org release ships, nothing
# downloaded from elsewhere), pinned here, cached outside the repo like the Kubernetes binaries.
set -euo pipefail
version="${PODROUTES_LTS_NODE_VERSION:-26.12.1}" # Node 26, the Active LTS line since October 2026
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  *) echo "podroutes: no Node LTS package for $(uname -m)" >&2; exit 1 ;;
esac
cache="${PODROUTES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/podroutes}/node/$version-$arch"
bin="$cache/node_modules/node-linux-$arch/bin"
if [ ! -x "$bin/node" ] || [ ! -e "$cache/.complete" ]; then
  echo "podroutes: installing Node $version (npm package node-linux-$arch) into $cache" >&2
  mkdir -p "$cache"
  # Two installers at once (two test runs) take turns; the stamp says the install finished.
  exec 9>"$cache.lock"
  flock 9
  if [ ! -e "$cache/.complete" ]; then
    npm install --prefix "$cache" --no-save --no-package-lock --no-audit --no-fund --loglevel=error "node-linux-$arch@$version" >&2
    "$bin/node" --version >/dev/null
    touch "$cache/.complete"
  fi
fi
echo "$bin"
