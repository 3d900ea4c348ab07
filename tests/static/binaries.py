#!/usr/bin/env python3
"""Every binary says its version (one, CMake's) with --version, and --help
lists its own flags (not abseil's "No flags matched"), without the build
machine's source paths.

  binaries.py BUILD_DIR VERSION
"""
import os
import subprocess
import sys

BINARIES = {
    "gateway/switchboard-gateway": ("switchboard-gateway", ["--config", "--drain_ms", "--log_format"]),
    "control/switchboard-control": ("switchboard-control", ["--config", "--health_listen", "--log_format"]),
    "cli/switchboardctl": ("switchboardctl", ["--config", "--user"]),
    "deploy/http-proxy/switchboard-http": ("switchboard-http", ["-listen", "-operator_listen", "-log_format"]),
}


def main():
    build, version = sys.argv[1], sys.argv[2]
    bad = []
    for rel, (name, flags) in BINARIES.items():
        exe = os.path.join(build, rel)
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
        if out.returncode != 0 or out.stdout.strip() != "%s %s" % (name, version):
            bad.append("%s --version: exit %d, %r" % (name, out.returncode, out.stdout + out.stderr))
        out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
        text = out.stdout + out.stderr
        missing = [f for f in flags if f not in text]
        source_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if missing or "No flags matched" in text or source_root + "/" in text:
            bad.append("%s --help does not list %s: %r" % (name, missing, text[:300]))
        print("%s: --version %r, --help lists %d flags" % (name, "%s %s" % (name, version), len(flags)))
    for b in bad:
        print(b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
