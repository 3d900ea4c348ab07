"""Clang's -Wthread-safety over the project's own sources, with the flags the
real build used (from compile_commands.json): keeps the ABSL_GUARDED_BY
annotations honest. Syntax-only, so it is quick.

  /usr/bin/python3 tests/static/thread_safety.py BUILD_DIR SOURCE_DIR
"""
import json
import os
import shlex
import shutil
import subprocess
import sys


def main():
    build, source = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    clang = shutil.which("clang++")
    if clang is None:
        print("clang++ not found (scripts/setup.sh installs it)")
        return 1
    with open(os.path.join(build, "compile_commands.json")) as f:
        commands = json.load(f)
    dirs = tuple(os.path.join(source, d) + os.sep for d in ("common", "gateway", "control", "cli"))
    failures = 0
    checked = 0
    for entry in commands:
        path = entry["file"]
        if not path.startswith(dirs):
            continue
        args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
        keep = []
        skip_next = False
        for a in args[1:]:
            if skip_next:
                skip_next = False
                continue
            if a in ("-o", "-c"):
                skip_next = a == "-o"
                continue
            if a == path or a.startswith("-fsanitize") or a.startswith("-fno-sanitize"):
                continue
            keep.append(a)
        # Launcher (ccache) first, if any.
        if os.path.basename(args[0]).startswith("ccache"):
            keep = keep[1:]
        cmd = [clang, "-fsyntax-only", "-Wthread-safety", "-Werror=thread-safety", "-Wno-unknown-warning-option"] + \
            [a for a in keep if not a.startswith("-fno-omit")] + [path]
        r = subprocess.run(cmd, cwd=entry["directory"], capture_output=True, text=True)
        checked += 1
        if r.returncode != 0:
            failures += 1
            sys.stdout.write(r.stderr)
    print("thread-safety analysis: %d files, %d with errors" % (checked, failures))
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
