#!/usr/bin/env bash
# The whole suite, twice: on the machine's Node, then on the newest Node LTS (scripts/lts-node.sh: the
# npm registry's node-linux-<arch> package, cached outside the repo). Both runs always happen; the exit
# status is the first failing run's. PODROUTES_TEST_NODE=machine|lts runs one of them (a quicker local loop).
set -uo pipefail
cd "$(dirname "$0")/.."
suite=(--enable-source-maps --test --test-concurrency=1 dist/src dist/e2e dist/deploy)
which="${PODROUTES_TEST_NODE:-both}"
status=0
summary=()

run_on() { # LABEL NODE_BINARY
  local label="$1" node="$2" version
  version="$("$node" --version)"
  echo "podroutes test: the suite on Node $version ($label)" >&2
  # The tests start podroutes and their servers with process.execPath, so every child runs on this Node too.
  "$node" "${suite[@]}"
  local code=$?
  summary+=("Node $version ($label): $([ $code = 0 ] && echo passed || echo "FAILED (exit $code)")")
  [ $status = 0 ] && status=$code
}

[ "$which" = lts ] || run_on "this machine's" "$(command -v node)"
if [ "$which" != machine ]; then
  if lts_bin="$(bash scripts/lts-node.sh)"; then
    run_on "newest LTS" "$lts_bin/node"
  else
    summary+=("newest LTS: NOT RUN (its install failed, above)")
    status=1
  fi
fi
printf 'podroutes test: %s\n' "${summary[@]}" >&2
exit $status
