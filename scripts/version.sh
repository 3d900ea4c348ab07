#!/usr/bin/env bash
# Prints Switchboard's version, the one every binary, image label and the
# bus hello carry. Defined once: the release number is CMakeLists.txt's
# project(VERSION); in a git checkout, `git describe` of a release tag
# (vX.Y.Z) when HEAD is at or past one, else the release number plus the
# commit (0.1.0+g1a2b3c4d5e6f, ".dirty" with uncommitted changes).
# SWITCHBOARD_VERSION, when set, wins (image builds, which copy no .git).
set -euo pipefail
src=$(cd "${1:-$(dirname "$0")/..}" && pwd)
if [[ -n ${SWITCHBOARD_VERSION:-} ]]; then
  echo "$SWITCHBOARD_VERSION"
  exit 0
fi
base=$(sed -n 's/^project(switchboard VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
if command -v git >/dev/null && git -C "$src" rev-parse --verify -q HEAD >/dev/null 2>&1 &&
   [[ $(git -C "$src" rev-parse --show-toplevel) == "$src" ]]; then
  if d=$(git -C "$src" describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
    echo "${d#v}"
    exit 0
  fi
  dirty=""
  [[ -z $(git -C "$src" status --porcelain --untracked-files=no 2>/dev/null) ]] || dirty=".dirty"
  echo "$base+g$(git -C "$src" rev-parse --short=12 HEAD)$dirty"
  exit 0
fi
echo "$base"
