#!/usr/bin/env python3
"""Every binary says its version with --version, one version for all:
scripts/version.sh's (CMake's project version, and git describe in a
checkout: the release number plus the commit), and --help lists its own
flags (not abseil's "No flags matched"), without the build machine's source
paths.

  binaries.py BUILD_DIR PROJECT_VERSION SOURCE_DIR
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
    build, release, source = sys.argv[1], sys.argv[2], sys.argv[3]
    version = subprocess.run(["bash", os.path.join(source, "scripts", "version.sh"), source], capture_output=True,
                             text=True, check=True).stdout.strip()
    bad = []
    if not version.startswith(release):
        bad.append("scripts/version.sh says %r, not of release %s" % (version, release))
    for rel, (name, flags) in BINARIES.items():
        exe = os.path.join(build, rel)
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
        if out.returncode != 0 or out.stdout.strip() != "%s %s" % (name, version):
            bad.append("%s --version: exit %d, %r" % (name, out.returncode, out.stdout + out.stderr))
        out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
        text = out.stdout + out.stderr
        if out.returncode != 0:
            bad.append("%s --help: exit %d" % (name, out.returncode))
        missing = [f for f in flags if f not in text]
        source_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if missing or "No flags matched" in text or source_root + "/" in text:
            bad.append("%s --help does not list %s: %r" % (name, missing, text[:300]))
        print("%s: --version %r, --help lists %d flags" % (name, "%s %s" % (name, version), len(flags)))
    bad += cli_checks(os.path.join(build, "cli", "switchboardctl"), source)
    for b in bad:
        print(b)
    return 1 if bad else 0


def cli_checks(ctl, source):
    """switchboardctl: help per command, the config search order, status
    names in errors."""
    import shutil
    import tempfile
    bad = []
    config = os.path.join(source, "config", "switchboard.yaml")
    cwd = tempfile.mkdtemp(prefix="switchboardctl-")
    env = {k: v for k, v in os.environ.items() if k not in ("SWITCHBOARD_CONFIG", "SWITCHBOARD_API_KEY")}

    def run(*args, env_extra=None):
        e = dict(env, **(env_extra or {}))
        out = subprocess.run([ctl] + list(args), capture_output=True, text=True, timeout=30, cwd=cwd, env=e)
        return out.returncode, out.stdout, out.stderr

    def expect(what, got, rc, *texts):
        code, out, err = got
        missing = [t for t in texts if t not in out + err]
        if code != rc or missing:
            bad.append("switchboardctl %s: exit %d (want %d), missing %s: %r" % (what, code, rc, missing,
                                                                                 (out + err)[:400]))
    expect("connections --help", run("connections", "--help"), 0, "usage: switchboardctl connections", "--user",
           "--page_size", "--timeout_ms", "--api_key", "$SWITCHBOARD_CONFIG")
    expect("help terminate", run("help", "terminate"), 0, "--except", "--reason")
    expect("--help", run("--help"), 0, "connections", "nats-config", "COMMAND --help", "./config/switchboard.yaml")
    expect("gentoken without any config", run("gentoken", "--user", "1"), 2, "no config found", "SWITCHBOARD_CONFIG")
    expect("gentoken with $SWITCHBOARD_CONFIG", run("gentoken", "--user", "1", env_extra={"SWITCHBOARD_CONFIG": config}),
           0, '"token"')
    expect("unknown command", run("bogus"), 2, "unknown command bogus")
    expect("a bad config", run("gentoken", "--user", "1", "--config", "/dev/null/x"), 2, "config /dev/null/x")
    os.makedirs(os.path.join(cwd, "config"))
    shutil.copy(config, os.path.join(cwd, "config", "switchboard.yaml"))
    expect("gentoken with ./config/switchboard.yaml", run("gentoken", "--user", "1"), 0, '"token"')
    with open(os.path.join(cwd, "switchboard.yaml"), "w") as f:
        f.write("{ not yaml")
    expect("./switchboard.yaml before ./config/", run("gentoken", "--user", "1"), 2, "config switchboard.yaml")
    os.remove(os.path.join(cwd, "switchboard.yaml"))
    shutil.rmtree(os.path.join(cwd, "config"))
    # Without a config, a call needs only --control and a key; an error is named.
    expect("connections against nobody", run("connections", "--user", "1", "--control", "127.0.0.1:1", "--api_key",
                                             "k", "--timeout_ms", "500"), 3, "switchboardctl: UNAVAILABLE: ")
    expect("connections without a key", run("connections", "--user", "1", "--control", "127.0.0.1:1"), 2,
           "no API key")
    shutil.rmtree(cwd)
    return bad


if __name__ == "__main__":
    sys.exit(main())
