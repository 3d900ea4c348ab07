"""Clang's -Wthread-safety keeps the ABSL_GUARDED_BY annotations honest. It
runs as part of the clang build itself (CMakeLists.txt,
SWITCHBOARD_PRODUCT_WARNINGS: -Wthread-safety -Werror=thread-safety on the
product's targets), so a violation fails that build. This test checks, from
the build's compile_commands.json, that every source file of the product
(common, gateway, control, cli) was compiled by clang with both flags: the
analysis cannot be dropped, for one target or all, without a red suite.

  /usr/bin/python3 tests/static/thread_safety.py BUILD_DIR SOURCE_DIR
"""
import json
import os
import shlex
import sys

FLAGS = ("-Wthread-safety", "-Werror=thread-safety")


def main():
    build, source = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    with open(os.path.join(build, "compile_commands.json")) as f:
        commands = json.load(f)
    dirs = tuple(os.path.join(source, d) + os.sep for d in ("common", "gateway", "control", "cli"))
    missing = []
    checked = 0
    for entry in commands:
        path = entry["file"]
        if not path.startswith(dirs):
            continue
        args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
        compiler = [a for a in args[:2] if "clang" in os.path.basename(a)]
        checked += 1
        if not compiler or any(flag not in args for flag in FLAGS):
            missing.append(os.path.relpath(path, source))
    for path in missing:
        print("not compiled by clang with %s: %s" % (" ".join(FLAGS), path))
    print("thread-safety analysis: %d product files compiled with it, %d without" % (checked - len(missing),
                                                                                      len(missing)))
    return 1 if missing or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
