#!/usr/bin/env bash
# Builds kube-apiserver, kube-proxy and etcd from the Go modules pinned in test/k8s/go.mod, and helm
# from test/k8s/helm/go.mod, into
# test/k8s/.cache/bin (ignored). Rebuilds only when go.mod or go.sum change. Prints the bin dir.
# Run by the test set-up (test/setup.ts). --check: build nothing; exit 0 (and print the bin dir)
# only when the binaries are there and up to date, else 4.
set -euo pipefail
check=0
if [ "${1:-}" = "--check" ]; then check=1; fi
here=$(cd "$(dirname "$0")" && pwd)
# K8S_CACHE_DIR moves the binaries (.ci/run FRESH=1 points it at an empty folder).
bin="${K8S_CACHE_DIR:-$here/.cache}/bin"
stamp="$bin/.stamp"
want=$(cat "$here/go.mod" "$here/go.sum" "$here/cmd/etcd/main.go" "$here/helm/go.mod" "$here/helm/go.sum" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$bin/kube-apiserver" ] && [ -x "$bin/etcd" ] && [ -x "$bin/kube-proxy" ] && [ -x "$bin/helm" ]; then
  echo "$bin"
  exit 0
fi
if [ "$check" = 1 ]; then echo "test/k8s: not built, or built from another go.mod/go.sum" >&2; exit 4; fi
command -v go >/dev/null || { echo "test/k8s: no Go toolchain on this machine" >&2; exit 3; }
mkdir -p "$bin"
cd "$here"
echo "test/k8s: building kube-apiserver, kube-proxy, etcd and helm (first time: several minutes)" >&2
GOFLAGS=-mod=mod go build -trimpath -o "$bin/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-proxy >&2
GOFLAGS=-mod=mod go build -trimpath -o "$bin/etcd" ./cmd/etcd >&2
(cd helm && GOFLAGS=-mod=mod go build -trimpath -o "$bin/helm" helm.sh/helm/v4/cmd/helm >&2)
echo "$want" > "$stamp"
echo "$bin"
