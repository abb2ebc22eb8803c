#!/usr/bin/env bash
# Installs what podroutes, its lab and its tests need on a fresh Debian machine: Debian packages with
# apt-get (only the missing ones, so a second run is instant) and the npm packages from the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v flock >/dev/null || need+=(util-linux) # the host-route targets' lock (flock(1))
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || need+=(containernetworking-plugins)
command -v ping >/dev/null || need+=(iputils-ping)
command -v traceroute >/dev/null || need+=(traceroute)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v nc >/dev/null || need+=(netcat-openbsd)
command -v openssl >/dev/null || need+=(openssl)
command -v ipset >/dev/null || need+=(ipset) # kube-router (a peer in the benchmarks) refuses to start without it
command -v gcc >/dev/null || need+=(gcc libc6-dev) # flannel (a peer) is built with cgo
command -v hcloud >/dev/null || need+=(hcloud-cli) # the real Hetzner Cloud CLI, the Hetzner test server's independent client
command -v openstack >/dev/null || need+=(python3-openstackclient) # the real OpenStack CLI, the OpenStack test server's independent client
command -v az >/dev/null || need+=(azure-cli) # the real Azure CLI, the Azure test server's independent client (large: about 1.4 GB installed)

if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "podroutes setup: missing Debian packages: ${need[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  echo "podroutes setup: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Preinstalled on this project's machines, not in Debian's archive: the real cloud CLIs, kubectl and moto,
# which the tests use as independent clients and as the EC2 test server.
for tool in gcloud aws moto_server kubectl go; do
  command -v "$tool" >/dev/null || echo "podroutes setup: warning: $tool not found; the tests that use it will fail" >&2
done

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-fund --no-audit --loglevel=error
fi
