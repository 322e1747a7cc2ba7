"""A module for tests/test_launch.py to start as the job starts the runner: it reports what the
process it runs in sees (environment, parent, whether torch was imported before it), then exits
with the status it is given, or sleeps."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time


def main(argv: list[str]) -> int:
    action, report = argv[0], argv[1]
    seen = {
        "env": {k: v for k, v in os.environ.items() if k.startswith(("DNNPROF_", "LAUNCH_TEST_"))},
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "torch_imported": "torch" in sys.modules,
        "daemonic": multiprocessing.current_process().daemon,  # may it start processes of its own
    }
    with open(report, "w") as fh:
        json.dump(seen, fh)
    print("to stdout", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    if action == "sleep":
        time.sleep(600)
    return int(action)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
