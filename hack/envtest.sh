#!/usr/bin/env bash
# hack/envtest.sh — build the binaries the operator's envtest suite runs (kube-apiserver, etcd and
# kube-controller-manager, whose StatefulSet, garbage-collector and disruption controllers the
# suite runs against the operator; kube-scheduler, which test/rollout runs to bind pods to its
# virtual-kubelet node)
# and the tools its packaging tests render with (kustomize, helm), from Go module source, and
# print the KUBEBUILDER_ASSETS directory on stdout (the last line; logs go to stderr).
#
#   export KUBEBUILDER_ASSETS=$(hack/envtest.sh)      # build once, then reuse the cache
#   hack/envtest.sh --check                            # exit 0 and print the dir if cached, 1 if not
#
# Why from source: no prebuilt binaries can be downloaded here, only Go modules. k8s.io/kubernetes
# and go.etcd.io/etcd/server/v3 both carry `replace` directives in their go.mod (staging modules,
# sibling modules), so `go install pkg@version` refuses them. Instead a throwaway module requires
# k8s.io/kubernetes and maps every staging module it replaces to the published k8s.io/X of the
# same minor; etcd's server is built in the same module, at the version kubernetes itself pins,
# so the pair is the one upstream tests together.
#
# Cost, measured cold on 2 shared cores: module download + tidy 0.5 min, etcd 1.5 min,
# kube-apiserver 9 min, kube-controller-manager ~7 min, kube-scheduler ~5 min (21 s when kube-controller-manager left a warm Go build cache), kustomize 1 min,
# helm 9 min — about 28 minutes. A warm cache returns in
# 0.1 s. Builds run under `nice` so they share the machine politely.
#
# Knobs: PARLEY_ENVTEST_K8S_VERSION (1.36.3), PARLEY_ENVTEST_CACHE ($HOME/.cache/parley-envtest),
# PARLEY_KUSTOMIZE_VERSION (v5.8.1), PARLEY_HELM_VERSION (v3.19.0), PARLEY_ENVTEST_NICE (10).
set -euo pipefail

K8S_VERSION=${PARLEY_ENVTEST_K8S_VERSION:-1.36.3}
KUSTOMIZE_VERSION=${PARLEY_KUSTOMIZE_VERSION:-v5.8.1}
HELM_VERSION=${PARLEY_HELM_VERSION:-v3.19.0}
NICE=${PARLEY_ENVTEST_NICE:-10}
CACHE_ROOT=${PARLEY_ENVTEST_CACHE:-${HOME:-/root}/.cache/parley-envtest}
DIR=$CACHE_ROOT/$K8S_VERSION
STAGING_VERSION=v0.${K8S_VERSION#*.}  # 1.36.3 -> v0.36.3

log() { printf '[envtest] %s\n' "$*" >&2; }
die() { printf '[envtest] ERROR: %s\n' "$*" >&2; exit 1; }

SERVER_BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler)

complete() {
  local b
  for b in "${SERVER_BINARIES[@]}" kustomize helm; do [[ -x $DIR/$b ]] || return 1; done
  "$DIR/kube-apiserver" --version >/dev/null 2>&1 && "$DIR/etcd" --version >/dev/null 2>&1 &&
    "$DIR/kube-controller-manager" --version >/dev/null 2>&1 && "$DIR/kube-scheduler" --version >/dev/null 2>&1
}

if [[ ${1:-} == --check ]]; then
  complete && { printf '%s\n' "$DIR"; exit 0; }
  exit 1
fi

command -v go >/dev/null || die "go is not on PATH"
mkdir -p "$DIR"

# One builder at a time per version (CI and a developer's shell may race).
exec 9>"$DIR/.lock"
if command -v flock >/dev/null; then flock 9; fi

if complete; then
  log "cached: $DIR"
  printf '%s\n' "$DIR"
  exit 0
fi

run_nice() { nice -n "$NICE" "$@"; }
timed() { # timed LABEL CMD... — runs CMD, logs how long it took
  local label=$1 start=$SECONDS; shift
  "$@"
  log "$label took $((SECONDS - start))s"
}

# ---------------------------------------------------------------- kube-apiserver + etcd
build_server_binaries() {
  local mod=$DIR/.build
  rm -rf "$mod" && mkdir -p "$mod"
  log "resolving k8s.io/kubernetes@v$K8S_VERSION (module source, ~50 MB)"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f $gomod ]] || die "could not download k8s.io/kubernetes@v$K8S_VERSION"

  # Every `k8s.io/X => ./staging/src/k8s.io/X` becomes `k8s.io/X => k8s.io/X v0.<minor>.<patch>`.
  local replaces
  replaces=$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._/-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod" | sort -u)
  [[ -n $replaces ]] || die "found no staging replaces in $gomod"
  {
    printf 'module parley.local/envtest-assets\n\ngo 1.26\n\n'
    printf 'require k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S_VERSION"
    local m
    for m in $replaces; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING_VERSION"; done
    printf ')\n'
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'EOF'
//go:build tools

// Package tools pins the commands this throwaway module builds.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
EOF
  # etcd's server at exactly the version kubernetes requires (it is in kubernetes' go.mod).
  local etcd_version
  etcd_version=$(sed -n 's#^[[:space:]]*go\.etcd\.io/etcd/server/v3[[:space:]]\+\(v[^[:space:]]*\).*#\1#p' "$gomod" | head -1)
  [[ -n $etcd_version ]] || die "kubernetes' go.mod names no go.etcd.io/etcd/server/v3"
  log "etcd server $etcd_version (the version kubernetes v$K8S_VERSION pins)"

  (
    cd "$mod"
    export GOFLAGS=-mod=mod GOTOOLCHAIN=local
    timed "go mod tidy" run_nice go mod tidy
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*}"
    local minor=${K8S_VERSION#*.}; minor=${minor%%.*}
    ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
    ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
    # Only what is missing: a cache from before kube-controller-manager or kube-scheduler
    # joined keeps its etcd and kube-apiserver.
    if [[ ! -x $DIR/etcd ]]; then
      log "building etcd"
      timed "etcd build" run_nice go build -trimpath -ldflags "-s -w" -o "$DIR/etcd.tmp" go.etcd.io/etcd/server/v3
      mv "$DIR/etcd.tmp" "$DIR/etcd"
    fi
    local cmd
    for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
      [[ -x $DIR/$cmd ]] && continue
      log "building $cmd (~9 min on 2 cores)"
      timed "$cmd build" run_nice go build -trimpath -ldflags "$ldflags" -o "$DIR/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$DIR/$cmd.tmp" "$DIR/$cmd"
    done
  )
  rm -rf "$mod"
}

# ---------------------------------------------------------------- kustomize + helm (packaging tests)
build_tools() {
  local gobin=$DIR/.gobin
  mkdir -p "$gobin"
  if [[ ! -x $DIR/kustomize ]]; then
    log "building kustomize $KUSTOMIZE_VERSION"
    GOBIN=$gobin GOTOOLCHAIN=local timed "kustomize build" run_nice go install -trimpath "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    mv "$gobin/kustomize" "$DIR/kustomize"
  fi
  if [[ ! -x $DIR/helm ]]; then
    log "building helm $HELM_VERSION"
    GOBIN=$gobin GOTOOLCHAIN=local timed "helm build" run_nice go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    mv "$gobin/helm" "$DIR/helm"
  fi
  rm -rf "$gobin"
}

start=$SECONDS
for b in "${SERVER_BINARIES[@]}"; do
  if [[ ! -x $DIR/$b ]]; then
    build_server_binaries
    break
  fi
done
build_tools
complete || die "built binaries do not run: $(ls -l "$DIR")"
log "ready in $((SECONDS - start))s: $("$DIR/kube-apiserver" --version), $("$DIR/etcd" --version | head -1)"
printf '%s\n' "$DIR"
