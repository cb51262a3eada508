"""The web client in real Chromium against the real stack: the journey of
web/e2e/journey.mjs (two people post, talk live, survive a realtime restart,
like, follow, reload, sign out), with its screenshots in results/web-e2e/."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from PIL import Image
from social_stack.local import Stack
from social_stack.paths import REPO_ROOT
from social_stack.web import WEB_DIR

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
SCREENSHOTS = REPO_ROOT / "results" / "web-e2e"
JOURNEY_TIMEOUT_SECONDS = 240


def _photos(folder: Path) -> list[Path]:
    """Two photos of about a megabyte (noise does not compress): uploads slow
    enough on a throttled link for their progress to be seen."""
    rng = random.Random(7)
    photos = []
    for name, colour in (("red-square.jpg", (200, 30, 30)), ("blue-circle.jpg", (30, 60, 200))):
        image = Image.frombytes("RGB", (900, 900), rng.randbytes(900 * 900 * 3))
        image.paste(colour, (250, 250, 650, 650))
        path = folder / name
        image.save(path, quality=95)
        photos.append(path)
    return photos


def test_two_people_post_and_talk_live_in_a_real_browser(
    stack_runner: Stack, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make browser` installs Debian's")
    if stack_runner.endpoints.web_url is None:
        pytest.fail("web/dist holds no build of the web client: `make web`")
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    journey = subprocess.Popen(
        ["node", str(WEB_DIR / "e2e" / "journey.mjs")],
        cwd=WEB_DIR,
        env={
            **os.environ,
            "BASE_URL": stack_runner.endpoints.gateway_url,
            "OUT_DIR": str(SCREENSHOTS),
            "PHOTOS": ",".join(str(p) for p in _photos(tmp_path)),
            "CHROMIUM_PATH": str(CHROMIUM),
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert journey.stdin is not None
    assert journey.stdout is not None
    watchdog = threading.Timer(JOURNEY_TIMEOUT_SECONDS, journey.kill)
    watchdog.start()
    output = []
    try:
        for line in journey.stdout:
            output.append(line)
            # The journey asks the stack to act: "@restart <component>".
            if line.startswith("@restart "):
                stack_runner.restart(line.split()[1])
                journey.stdin.write("done\n")
                journey.stdin.flush()
        journey.wait()
    finally:
        watchdog.cancel()
    assert journey.returncode == 0, "".join(output)
    assert (SCREENSHOTS / "03-post-live.png").is_file()
