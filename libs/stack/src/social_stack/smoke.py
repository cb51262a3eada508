"""The smoke test of a release: the whole fleet answers through its gateway.

    python -m social_stack.smoke https://staging.example.com [--wait 120]

Every roster service's public health route (``/api/v1/<service>/healthz``,
ready: its PostgreSQL and Redis reachable) must answer 200 through the
gateway, and the web client's page ``/`` must be HTML. All of them, whichever
image was released: a new gateway or chart can break another service's route.
Each check is retried for up to ``--wait`` seconds (a load balancer takes a
moment to send traffic to new pods). Prints a line per check; exits 1 when
one fails. HTTP through the standard library: nothing to install beyond the
workspace's packages (the roster).
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from social_common.fleet import roster


@dataclass(frozen=True)
class Check:
    path: str
    content_type: str

    def failure(self, base_url: str, timeout: float) -> str | None:
        """Why the check fails now, or None when it passes."""
        try:
            # The URL is the operator's, http(s) by the argument's check.
            url = f"{base_url}{self.path}"
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                kind = response.headers.get("content-type", "")
                if not kind.startswith(self.content_type):
                    return f"answered {kind or 'no content type'}, not {self.content_type}"
                return None
        except urllib.error.HTTPError as error:
            return f"answered {error.code}"
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            return f"unreachable: {reason}"


def checks() -> list[Check]:
    services = [Check(f"/api/v1/{name}/healthz", "application/json") for name in roster().services]
    return [*services, Check("/", "text/html")]


def run(base_url: str, wait: float, interval: float = 5.0, timeout: float = 10.0) -> bool:
    """Runs every check (each retried until ``wait`` runs out); True when all pass."""
    base_url = base_url.rstrip("/")
    deadline = time.monotonic() + wait
    passed = True
    for check in checks():
        while (failure := check.failure(base_url, timeout)) and time.monotonic() < deadline:
            time.sleep(interval)
        print(f"{'FAIL' if failure else 'ok  '} {check.path}{f': {failure}' if failure else ''}")
        passed = passed and failure is None
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m social_stack.smoke", description=__doc__)
    parser.add_argument("url", help="the gateway's public URL")
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds a check may take to pass (120)"
    )
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        parser.error("the URL must be http:// or https://")
    return 0 if run(args.url, args.wait) else 1


if __name__ == "__main__":
    sys.exit(main())
