#!/bin/sh
# Prints the Debian packages that hold the shared libraries a binary links
# (for the runtime stage of an image). Usage: runtime-packages.sh BINARY
set -eu
ldd "$1" | awk '/=> \//{print $3}' | while read -r lib; do
  # merged /usr: dpkg knows a library under /lib or /usr/lib, whichever its
  # package ships; ldd may name either.
  for p in "$lib" "/usr$lib" "${lib#/usr}"; do
    if pkg=$(dpkg -S "$p" 2>/dev/null); then
      echo "${pkg%%:*}"
      break
    fi
  done
done | sort -u
