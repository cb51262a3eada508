"""Renders the web client's static server (web/envoy.yaml.j2) from a built bundle.

The bundle is what `npm run build` writes to web/dist: the app's page
(index.html), the API reference's page (docs.html) and content-hashed files
under assets/. The server says what each file is and how long it keeps; the
gateway adds the pages' security headers (``security_headers``): one
Content-Security-Policy for all of them, only this origin's scripts and
styles, nothing inline, nothing framed, images also from where the media
service says they are served.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
from social_common.fleet import roster

from social_stack.paths import REPO_ROOT

WEB_DIR = REPO_ROOT / "web"
DIST_DIR = WEB_DIR / "dist"


def content_security_policy(media_origin: str = "") -> str:
    """What the pages may load: ``media_origin`` is where the images are
    served when not from this origin (a CDN: MEDIA_PUBLIC_BASE_URL's)."""
    # blob: the photos being composed; data: the blurhash placeholders.
    images = " ".join(["'self'", "blob:", "data:", *([media_origin] if media_origin else [])])
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            # 'self' takes in the same origin's WebSocket (ws: or wss:).
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ]
    )


def security_headers(media_origin: str = "") -> dict[str, str]:
    """The headers of every page and file of the web client (set by the gateway)."""
    return {
        "content-security-policy": content_security_policy(media_origin),
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
        "cross-origin-opener-policy": "same-origin",
        "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }


# Files named by their content's hash never change: a year, immutable. The
# pages change with every release and are fetched again every time.
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
# Other files at the top (a favicon, robots.txt) keep their names.
SHORT = "public, max-age=3600"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
_PAGES = {"index.html": "/", "docs.html": "/api/docs"}


class BundleError(RuntimeError):
    """The bundle is missing or has a file the server cannot type."""


@dataclass(frozen=True)
class StaticFile:
    path: str  # the URL path
    file: str  # where the server reads it
    content_type: str
    cache_control: str
    size: int


@dataclass(frozen=True)
class WebConfig:
    listen_host: str
    listen_port: int
    admin_host: str
    admin_port: int


def kubernetes_web_config() -> WebConfig:
    """A pod's: every interface on the roster's pod HTTP port, admin on loopback."""
    fleet = roster()
    return WebConfig(
        "0.0.0.0",  # noqa: S104  # the pod's listener
        fleet.pod_ports.http,
        "127.0.0.1",
        fleet.web.admin_port,
    )


def bundle(dist: Path, served_from: Path | None = None) -> list[StaticFile]:
    """The files of the bundle in ``dist``, as the server at ``served_from``
    (``dist`` unless the files are copied elsewhere, as in the image) reads them."""
    if not (dist / "index.html").is_file():
        raise BundleError(f"{dist} holds no built web client: run `make web`")
    root = served_from or dist
    files = []
    for file in sorted(p for p in dist.rglob("*") if p.is_file()):
        relative = file.relative_to(dist).as_posix()
        content_type = _CONTENT_TYPES.get(file.suffix)
        if content_type is None:
            raise BundleError(f"{relative}: no content type known for {file.suffix!r}")
        if relative in _PAGES:
            path, cache_control = _PAGES[relative], NO_CACHE
        else:
            immutable = relative.startswith("assets/")
            path, cache_control = f"/{relative}", IMMUTABLE if immutable else SHORT
        files.append(
            StaticFile(path, str(root / relative), content_type, cache_control, file.stat().st_size)
        )
    return files


def render_web(config: WebConfig, files: list[StaticFile]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(WEB_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701  # YAML, not HTML
    )
    (index,) = (f for f in files if f.path == "/")
    return env.get_template("envoy.yaml.j2").render(
        listen_host=config.listen_host,
        listen_port=config.listen_port,
        admin_host=config.admin_host,
        admin_port=config.admin_port,
        files=[f for f in files if f.path != "/"],
        index=index,
        max_file_bytes=max(f.size for f in files),
    )
