#!/usr/bin/env bash
# Builds Switchboard's container images offline (no registry): a Debian 12
# base made with mmdebstrap from Debian's mirror and imported into podman,
# the project compiled once in a build stage on it, then the runtime images
# (control, gateway, http, nats) from their Containerfiles.
#
#   deploy/images/build.sh            # build what is missing or changed
#   deploy/images/build.sh --sizes    # also print each image's size
#   deploy/images/build.sh --previous # also the images of the previous commit
#
# --previous builds control, gateway and http from the commit before HEAD
# (or $SWITCHBOARD_PREVIOUS_REF: a tag, a branch, a commit), each from that
# commit's own Containerfiles, tagged localhost/switchboard/<name>:previous
# with the commit in the label org.opencontainers.image.revision: the
# multi-host test upgrades a fleet from them to the current images. The
# build stage shares the ccache (same /src and /build paths), so only what
# changed between the two commits is compiled twice. Without the commit (a
# shallow clone) it says so and builds nothing for it.
#
# Images are tagged localhost/switchboard/<name>:<version> with the version
# of CMakeLists.txt's project(), the tag the kustomize manifests pin.
# podman reads deploy/images/containers.conf (runc, fd limits); nothing
# system-wide is changed. A ccache directory (~/.cache/switchboard-image-ccache)
# is mounted into the build stage, so a rebuild after a small change is quick.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export CONTAINERS_CONF=$root/deploy/images/containers.conf

sizes=false
previous=false
for arg in "$@"; do
  case $arg in
    --sizes) sizes=true ;;
    --previous) previous=true ;;
    *) echo "images: unknown argument $arg (--sizes, --previous)" >&2; exit 2 ;;
  esac
done

missing=()
# podman-compose and the CNI dnsname plugin (service names on a compose
# network) for deploy/compose and its test.
for p in podman runc mmdebstrap uidmap podman-compose golang-github-containernetworking-plugin-dnsname; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "images: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

version=$(sed -n 's/^project(switchboard VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
base=localhost/switchboard/debian-base:bookworm
build=localhost/switchboard/build:$version

if ! podman image exists "$base"; then
  echo "images: making the Debian base with mmdebstrap"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # Documentation, man pages and translations are left out (the copyright
  # files stay), here and in every package installed on top later.
  mmdebstrap --variant=minbase --include=ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$tmp/base.tar" http://deb.debian.org/debian
  podman import --change 'CMD ["/bin/bash"]' "$tmp/base.tar" "$base" >/dev/null
fi

ccache_dir=${SWITCHBOARD_IMAGE_CCACHE:-$HOME/.cache/switchboard-image-ccache}
mkdir -p "$ccache_dir"
echo "images: build stage $build"
# The full version (scripts/version.sh: git describe) for the binaries and
# the image labels; the tags stay the release number the manifests name.
full_version=$(bash scripts/version.sh)
podman build -q -f deploy/images/Containerfile.build --build-arg BASE="$base" \
  --build-arg SWITCHBOARD_VERSION="$full_version" -v "$ccache_dir:/ccache" -t "$build" . >/dev/null

for name in control gateway http nats; do
  echo "images: localhost/switchboard/$name:$version"
  podman build -q -f "deploy/images/Containerfile.$name" --build-arg BASE="$base" --build-arg BUILD="$build" \
    --build-arg VERSION="$full_version" -t "localhost/switchboard/$name:$version" . >/dev/null
done

if $previous; then
  ref=${SWITCHBOARD_PREVIOUS_REF:-HEAD~1}
  if ! prev=$(git rev-parse --verify -q "$ref^{commit}"); then
    echo "images: no commit $ref here (a shallow clone?): no previous images; the multi-host upgrade test will say it did not run"
    for name in control gateway http; do podman rmi -f "localhost/switchboard/$name:previous" >/dev/null 2>&1 || true; done
  else
    prevtree=$(mktemp -d)
    git archive "$prev" | tar -x -C "$prevtree"
    echo "images: build stage of the previous commit ${prev:0:12} ($ref)"
    podman build -q -f "$prevtree/deploy/images/Containerfile.build" --build-arg BASE="$base" \
      -v "$ccache_dir:/ccache" -t localhost/switchboard/build:previous "$prevtree" >/dev/null
    for name in control gateway http; do
      echo "images: localhost/switchboard/$name:previous (${prev:0:12})"
      podman build -q -f "$prevtree/deploy/images/Containerfile.$name" --build-arg BASE="$base" \
        --build-arg BUILD=localhost/switchboard/build:previous --build-arg VERSION="previous-${prev:0:12}" \
        --label org.opencontainers.image.revision="$prev" \
        -t "localhost/switchboard/$name:previous" "$prevtree" >/dev/null
    done
    rm -rf "$prevtree"
  fi
fi

if $sizes; then
  for name in debian-base control gateway http nats; do
    tag=$version; [[ $name == debian-base ]] && tag=bookworm
    printf '%-14s %s\n' "$name" "$(podman image inspect --format '{{.Size}}' "localhost/switchboard/$name:$tag" |
      awk '{printf "%.1f MB", $1/1e6}')"
  done
fi
