#!/usr/bin/env python3
"""The alerting rules: the PrometheusRule in deploy/k8s/components/monitoring
is the one source; its spec is written out as a Prometheus rule file, checked
with `promtool check rules`, and unit-tested with `promtool test rules` on
deploy/prometheus/alerts_test.yaml (cases that fire and cases that must not).

  alert_rules.py SOURCE_DIR
"""
import os
import shutil
import subprocess
import sys
import tempfile

import yaml


def main():
    src = sys.argv[1]
    rule = yaml.safe_load(open(os.path.join(src, "deploy/k8s/components/monitoring/prometheus-rule.yaml")))
    work = tempfile.mkdtemp(prefix="switchboard-rules-")
    try:
        with open(os.path.join(work, "switchboard-rules.yaml"), "w") as f:
            yaml.safe_dump(rule["spec"], f, sort_keys=False)
        shutil.copy(os.path.join(src, "deploy/prometheus/alerts_test.yaml"), work)
        alerts = sorted(r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r)
        tested = open(os.path.join(work, "alerts_test.yaml")).read()
        untested = [a for a in alerts if "alertname: %s\n" % a not in tested]
        if untested:
            print("alerts without a test case: %s" % ", ".join(untested))
            return 1
        for args in (["check", "rules", "switchboard-rules.yaml"], ["test", "rules", "alerts_test.yaml"]):
            out = subprocess.run(["promtool"] + args, cwd=work, capture_output=True, text=True, timeout=120)
            print("promtool %s: %s" % (" ".join(args), (out.stdout + out.stderr).strip()))
            if out.returncode != 0 or "FAILED" in out.stdout + out.stderr:
                return 1
        print("%d alerts, each with cases that fire and that must not" % len(alerts))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
