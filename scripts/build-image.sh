#!/usr/bin/env bash
# Build plainnet's image with podman, as root:  scripts/build-image.sh [--name NAME]
#
#   localhost/plainnet:<version of pyproject.toml>   (the name deploy/*.yaml reference)
#
# Works on a machine that reaches no container registry (like the CI machines): the
# Debian base is then made here with debootstrap from the machine's own apt mirror and
# imported into podman once (it stays in podman's storage, outside the checkout).
# Python packages are fetched by the host's pip into a wheelhouse (build/wheels), so
# the build itself needs no TLS to a package index: a TLS-intercepting proxy whose CA
# only the host trusts does not break it.
#
# What this podman needs is found out, not assumed: when the default OCI runtime cannot
# start a container here (crun refuses some cgroup layouts), builds use
# `--isolation chroot` and runs `--runtime runc`; when the default rlimits cannot be
# set (no CAP_SYS_RESOURCE), runs pass this shell's own limits as `--ulimit`s.
#
#   scripts/build-image.sh --run-flags   prints the `podman run` flags that work here
#   scripts/build-image.sh --name N      tags the image N as well (e.g. your registry's)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build-image.sh: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "must run as root (podman's root storage, debootstrap)"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
[[ -n $version ]] || die "no version in pyproject.toml"
image="localhost/plainnet:$version"
base="localhost/debian:bookworm-slim"
cache=${PLAINNET_CACHE:-/var/cache/plainnet}
extra_names=()
mode=build
while (($#)); do
    case $1 in
        --run-flags) mode=flags ;;
        --name) [[ $# -ge 2 ]] || die "--name needs a value"; extra_names+=("$2"); shift ;;
        --image-name) mode=name ;;
        *) die "unknown argument $1 (known: --name NAME, --run-flags, --image-name)" ;;
    esac
    shift
done
if [[ $mode == name ]]; then
    echo "$image"
    exit 0
fi

command -v podman >/dev/null && command -v debootstrap >/dev/null || bash scripts/install.sh >/dev/null

# --- the Debian base ------------------------------------------------------------------
# The machine's own Debian mirror for bookworm, from apt's configured sources.
mirror() {
    apt-get indextargets --format '$(SITE) $(RELEASE) $(TARGET_OF)' 2>/dev/null \
        | awk '$2 == "bookworm" && $3 == "deb" {print $1; exit}'
}

make_base() {
    local url root
    url=$(mirror)
    [[ -n $url ]] || die "no bookworm mirror in apt's sources (apt-get indextargets); add one"
    root=$(mktemp -d "${TMPDIR:-/tmp}/pn-rootfs.XXXXXX")
    trap 'rm -rf "$root"' RETURN
    local include=()
    [[ $url == https:* ]] && include=(--include=ca-certificates)
    echo "build-image.sh: making the Debian base with debootstrap from $url"
    debootstrap --variant=minbase "${include[@]}" bookworm "$root" "$url" >"$root.log" 2>&1 \
        || { tail -5 "$root.log" >&2; rm -f "$root.log"; die "debootstrap failed"; }
    rm -f "$root.log"
    # what a container never needs: downloaded packages, package lists, docs, locales
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/*
    # keep it that way for packages installed on top (as Debian's own slim images do)
    cat >"$root/etc/dpkg/dpkg.cfg.d/plainnet-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    tar -C "$root" -c . | podman import --quiet - "$base" >/dev/null
}

podman image exists "$base" || make_base

# --- what podman needs on this machine ---------------------------------------------------
run_flags=()
build_flags=()
probe() { podman run --rm --pull=never --network none "$@" "$base" /bin/true >/dev/null 2>&1; }
detect() {
    # this shell's own limits first; then small ones (some sandboxes refuse even a
    # process's own hard limit to the container's init)
    local limit_sets=(
        "--ulimit nofile=$(ulimit -Sn):$(ulimit -Hn) --ulimit nproc=$(ulimit -Su):$(ulimit -Hu)"
        "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
    )
    local runtime limits found=""
    for runtime in "" "--runtime runc"; do
        for limits in "" "${limit_sets[@]}"; do
            # shellcheck disable=SC2086  # the flags are words
            if probe $runtime $limits; then found="$runtime $limits"; break 2; fi
        done
    done
    [[ -n $found ]] || probe || die "podman cannot start a container here (tried crun, runc, --ulimit)"
    read -ra run_flags <<<"$found"
    # builds run their steps with the default runtime: chroot isolation needs none
    [[ $found == *--runtime* ]] && build_flags+=(--isolation chroot)
    return 0
}
detect
if [[ $mode == flags ]]; then
    echo "${run_flags[*]}"
    exit 0
fi

# --- the wheelhouse ----------------------------------------------------------------------
rm -rf build/wheels
mkdir -p build/wheels
bash scripts/install.sh >/dev/null
.venv/bin/python -m pip wheel -q --disable-pip-version-check --wheel-dir build/wheels . \
    >build/wheels.log 2>&1 \
    || { tail -5 build/wheels.log >&2; die "pip could not fetch plainnet's dependencies (build/wheels.log)"; }

# An https apt mirror needs the CA the host trusts (it may be an intercepting proxy's):
# lent to the build steps as a read-only volume, never copied into a layer.
if [[ $(mirror) == https:* ]]; then
    build_flags+=(--volume /etc/ssl/certs:/etc/ssl/certs:ro)
fi

echo "build-image.sh: building $image"
podman build --pull=never --network host "${build_flags[@]}" \
    --build-arg "BASE=$base" --build-arg "VERSION=$version" \
    --tag "$image" -f Containerfile . >build/image-build.log 2>&1 \
    || { tail -20 build/image-build.log >&2; die "podman build failed (whole log: build/image-build.log)"; }
for name in "${extra_names[@]}"; do
    podman tag "$image" "$name"
done
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "build-image.sh: built $image ($((size / 1000000)) MB)"
