"""The README's quick start, run as written against the test stack; and the
pages a contributor reads link to nothing outside the repository.

The ```bash blocks between the README's ``<!-- quick-start: … -->`` and
``<!-- /quick-start -->`` markers are run, in order, in one bash, with only
the local stack's gateway address replaced by the test stack's: when the API
and the page disagree, this fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from social_stack.local import Endpoints, Ports
from social_stack.paths import REPO_ROOT
from social_stack.testing import client, fresh_address

README = REPO_ROOT / "README.md"
START = "<!-- quick-start:"
END = "<!-- /quick-start -->"
BLOCK = re.compile(r"^```bash\n(.*?)^```$", re.DOTALL | re.MULTILINE)
# Where the README's commands send their requests: the documented `make dev` gateway.
DEV_GATEWAY = f"127.0.0.1:{Ports().envoy}"
# The pages a contributor reads first, and their Markdown links: [text](target).
PAGES = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def quick_start(readme: str, gateway_url: str) -> str:
    """The quick start's commands as one script, aimed at ``gateway_url``."""
    assert readme.count(START) == 1, f"the README has no single {START!r} marker"
    assert readme.count(END) == 1, f"the README has no single {END!r} marker"
    section = readme[readme.index(START) : readme.index(END)]
    blocks = BLOCK.findall(section)
    assert blocks, "the quick start has no ```bash block"
    script = "\n".join(blocks)
    assert DEV_GATEWAY in script, f"the quick start does not speak to {DEV_GATEWAY}"
    return script.replace(DEV_GATEWAY, urlsplit(gateway_url).netloc)


def run(script: str, work: Path) -> subprocess.CompletedProcess[str]:
    """Runs ``script`` from the repository root, as a reader would, stopping
    at the first failing command. Its requests come from a loopback address
    of their own (curl's config file says which), so the per-address limits
    on registration and login that other tests spend are not its."""
    (work / ".curlrc").write_text(f'interface = "{fresh_address()}"\n')
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(CURL_HOME=str(work), TMPDIR=str(work))
    argv = ["bash", "-e", "-u", "-o", "pipefail", "-c", script]
    out, err = work / "stdout", work / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        # Files, not pipes: a WebSocket client left behind by a failing
        # script must not hold the answer up until it times out.
        process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True
        )
        try:
            code = process.wait(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    return subprocess.CompletedProcess(argv, code, out.read_text(), err.read_text())


def frames(output: str) -> list[dict[str, Any]]:
    """The WebSocket frames the script printed (JSON objects with an ``op``), in order."""
    found = []
    for line in output.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "op" in value:
            found.append(value)
    return found


def test_the_quick_start_in_the_readme_works_as_written(stack: Endpoints, tmp_path: Path) -> None:
    result = run(quick_start(README.read_text(), stack.gateway_url), tmp_path)
    assert result.returncode == 0, (
        f"the README's quick start failed (exit {result.returncode})\n"
        f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    )

    # The subscription was acknowledged, then the message arrived on it.
    found = frames(result.stdout)
    assert [frame["op"] for frame in found] == ["ack", "event"], result.stdout
    ack, event = found
    assert (ack["for"], ack["channel"]) == ("subscribe", event["channel"])
    assert event["type"] == "message.created"
    post_id = event["channel"].removeprefix("post:")
    assert event["data"]["post_id"] == post_id

    # It is the message the script left, on the post with the photo it uploaded.
    with client(stack.gateway_url) as http:
        post = http.get(f"/api/v1/posts/{post_id}").json()
        messages = http.get(f"/api/v1/posts/{post_id}/messages").json()["items"]
    assert len(post["media"]) == 1
    assert post["author"]["id"] == event["data"]["post_author_id"]
    assert [(m["id"], m["message"]) for m in messages] == [
        (event["data"]["message_id"], event["data"]["text"])
    ]


def test_the_readme_and_docs_link_only_to_files_in_the_repository() -> None:
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if urlsplit(target).scheme or target.startswith("#"):
                continue  # a web page, or a heading of the same page
            linked = (page.parent / target.partition("#")[0]).resolve()
            where = f"{page.relative_to(REPO_ROOT)} links to {target}"
            assert linked.is_relative_to(REPO_ROOT.resolve()), f"{where}: outside the repository"
            assert linked.exists(), f"{where}: no such file"


def test_every_setting_a_service_reads_is_documented() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for entry in entry_points(group="social.services"):
        spec = entry.load()()
        missing = [
            var.name for var in spec.settings_class.variables() if f"`{var.name}" not in readme
        ]
        assert missing == [], f"{spec.name}: settings the README does not name"
