#!/usr/bin/env python3
"""List the failing checks of one conformance run, as baseline entries with the reason.

Usage: conformance-failures.py RUN_DIR LOG [--all]
  RUN_DIR  the -o directory of one revision (holds server-<scenario>-<time>/checks.json)
  LOG      that run's console log (the runner's "Unexpected failures" list says which
           scenarios are scored and failing; not-scored scenarios are left out unless --all)

Prints YAML list items: "  - <scenario>:<check-id>  # <STATUS>: <message>".
A check fails when its status is FAILURE or WARNING (as the conformance CLI judges it).
"""
import json
import pathlib
import re
import sys


def main() -> int:
    run_dir, log = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    show_all = "--all" in sys.argv[3:]
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
    # Scenarios the runner judged: failing ones appear in SUMMARY with a cross.
    summary = text.split("=== SUMMARY ===", 1)[-1]
    unexpected = set()
    if "Unexpected failures" in summary:
        block = summary.split("Unexpected failures", 1)[1]
        for line in block.splitlines()[1:]:
            m = re.match(r"\s+✗\s+(\S+)", line)
            if not m:
                break
            unexpected.add(m.group(1))
    for d in sorted(run_dir.glob("server-*/checks.json")):
        scenario = re.sub(r"-\d{4}-\d\d-\d\dT[\d-]+Z$", "", d.parent.name)[len("server-"):]
        checks = json.loads(d.read_text())
        seen = set()
        for c in checks:
            if c.get("status") not in ("FAILURE", "WARNING"):
                continue
            entry = f"{scenario}:{c['id']}"
            if entry in seen:
                continue
            seen.add(entry)
            if not show_all and unexpected and scenario.split(":")[0] not in unexpected:
                continue
            msg = (c.get("errorMessage") or c.get("description") or "").replace("\n", " ")
            print(f"  - {entry}  # {c['status']}: {msg[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
