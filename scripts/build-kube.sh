#!/usr/bin/env bash
# Build a real kube-apiserver and kube-controller-manager (v1.20.2) from Debian's own
# `kubernetes` source package with Debian's Go 1.19, offline, once per machine, into a
# cache outside the checkout (default /var/cache/plainnet/kube-v1.20.2-2). Later runs find
# the binaries there and return at once. Recipe and pitfalls: shared/testbeds/kubernetes.md.
#
# usage: scripts/build-kube.sh [CACHE_DIR]     prints the directory holding the binaries
set -euo pipefail

# The "-2": binaries built before the reflect2 fix below must be rebuilt, not found.
cache=${1:-${PLAINNET_KUBE_CACHE:-/var/cache/plainnet/kube-v1.20.2-2}}
if [[ -x $cache/kube-apiserver && -x $cache/kube-controller-manager ]]; then
    echo "$cache"
    exit 0
fi
if [[ $EUID -ne 0 ]]; then
    echo "build-kube.sh: must run as root (installs Debian packages)" >&2
    exit 1
fi
log() { echo "build-kube.sh: $*" >&2; }

# Debian's source lists ship binary entries only: add a deb-src twin of the system's
# own sources file (no host is named here; it is copied).
sources=/etc/apt/sources.list.d/plainnet-deb-src.sources
if [[ ! -f $sources ]]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$sources"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends golang-1.19 dpkg-dev openssl \
    golang-github-modern-go-reflect2-dev >/dev/null
go=/usr/lib/go-1.19/bin/go

work=$(mktemp -d /var/tmp/plainnet-kube-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
log "fetching Debian's kubernetes source package"
apt-get source --download-only -qq kubernetes >/dev/null
tarball=$(ls kubernetes_*.orig.tar.gz | head -1)
mkdir -p gopath/src/k8s.io tree
tar -xzf "$tarball" -C tree --strip-components=1
ln -s "$work/tree" gopath/src/k8s.io/kubernetes

export GOPATH=$work/gopath GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOFLAGS=
export GOCACHE=$work/gocache
cd gopath/src/k8s.io/kubernetes

# The vendored github.com/modern-go/reflect2 v1.0.1 is broken under Go >= 1.18: the
# server panics (nil pointer in reflect2.(*frozenConfig).Type2) on some requests, e.g.
# once it has answered a client with curl's User-Agent. Debian's 1.0.2 is fixed.
fixed=/usr/share/gocode/src/github.com/modern-go/reflect2
test -f "$fixed/reflect2.go"
rm -rf vendor/github.com/modern-go/reflect2
cp -r "$fixed" vendor/github.com/modern-go/reflect2

# The tarball lacks the generated OpenAPI definitions: generate them as upstream's
# `make generated_files` does, from every package tagged +k8s:openapi-gen=.
log "generating OpenAPI definitions"
"$go" build -o "$work/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
packages=$(grep -rl --include='*.go' '+k8s:openapi-gen=' . \
    | grep -v '^./vendor/' | grep -v '/code-generator/' | grep -v '/sample-apiserver/' \
    | xargs -n1 dirname | sort -u \
    | sed -e 's#^\./staging/src/#k8s.io/kubernetes/vendor/#' -e 's#^\./#k8s.io/kubernetes/#' \
    | paste -sd, -)
"$work/openapi-gen" --input-dirs "$packages" \
    --output-package k8s.io/kubernetes/pkg/generated/openapi \
    --output-file-base zz_generated.openapi \
    --go-header-file vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$work/api-rules.report" >/dev/null 2>&1 || true
test -f pkg/generated/openapi/zz_generated.openapi.go

version_flags=""
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
           k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    version_flags+=" -X $pkg.gitVersion=v1.20.2 -X $pkg.gitMajor=1 -X $pkg.gitMinor=20"
done
mkdir -p "$cache.partial"
for binary in kube-apiserver kube-controller-manager; do
    log "building $binary (several minutes on 2 cores)"
    "$go" build -p 2 -ldflags "-s -w$version_flags" -o "$cache.partial/$binary" "./cmd/$binary"
done
rm -rf "$cache"
mv "$cache.partial" "$cache"
log "built into $cache"
echo "$cache"
