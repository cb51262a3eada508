"""``python -m tools.load TEST...`` (``make load-test-<test>``): run load
tests against the stack `make up` started, one after the other; ``all`` is
every test. Exits 1 if a test failed a threshold (its report says which),
2 if it could not run.

Settings (environment): LOAD_SCALE [0.1], the share of the seed's users and
durations (1: the seed's own, 26 minutes for basic); no phase shorter than
tests.MIN_PHASE_S.
"""

from __future__ import annotations

import sys

from social_stack.local import load_state
from social_stack.paths import DEFAULT_RUN_DIR

from tools.bench.stackapi import BenchError

from .run import log, run_test, scale_setting
from .tests import TESTS


def main(argv: list[str]) -> int:
    names = list(TESTS) if argv == ["all"] else argv
    unknown = [name for name in names if name not in TESTS]
    if not names or unknown:
        print(f"usage: python -m tools.load all | {' | '.join(TESTS)}...", file=sys.stderr)
        return 2
    loaded = load_state(DEFAULT_RUN_DIR)
    if loaded is None:
        print("load: no stack is running: `make up` first", file=sys.stderr)
        return 2
    endpoints = loaded[0]
    try:
        scale = scale_setting()
        failed = [name for name in names if not run_test(TESTS[name](scale), scale, endpoints)]
    except BenchError as exc:
        print(f"load: error: {exc}", file=sys.stderr)
        return 2
    log(f"failed: {', '.join(failed)}" if failed else f"passed: {', '.join(names)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
