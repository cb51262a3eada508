"""How the gateway serves the web client (web/dist through its static server,
social_stack.web): same origin, history fallback, caching, one strict policy."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import httpx
import pytest
from social_stack.local import Endpoints
from social_stack.web import (
    DIST_DIR,
    IMMUTABLE,
    NO_CACHE,
    BundleError,
    bundle,
    content_security_policy,
)

# The local stack serves the images from its own /media/.
CONTENT_SECURITY_POLICY = content_security_policy()


@pytest.fixture(scope="module")
def site(stack: Endpoints) -> str:
    if stack.web_url is None:
        pytest.fail("web/dist holds no build of the web client: `make web`")
    return stack.gateway_url


def _assets(kind: str) -> list[str]:
    return re.findall(rf'"/(assets/[^"]+\.{kind})"', (DIST_DIR / "index.html").read_text())


def _is_page(response: httpx.Response, marker: str) -> bool:
    return response.status_code == 200 and marker in response.text


def test_every_page_of_the_app_is_its_index_never_cached(site: str) -> None:
    index = (DIST_DIR / "index.html").read_text()
    for path in ("/", "/p/0190d4a0-0000-7000-8000-000000000000", "/u/ann/followers", "/login"):
        response = httpx.get(site + path)
        assert (response.status_code, response.text) == (200, index), path
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["cache-control"] == NO_CACHE
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"


def test_the_policy_forbids_inline_script_and_the_pages_have_none() -> None:
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
    assert "img-src 'self' blob: data: https://cdn.example.net;" in content_security_policy(
        "https://cdn.example.net"
    )
    for page in ("index.html", "docs.html"):
        html = (DIST_DIR / page).read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"inline script in {page}"
        assert "<style" not in html, f"inline style in {page}"
        assert not re.search(r"\sstyle=", html), f"style attribute in {page}"


def test_hashed_files_are_immutable_and_gzipped_for_clients_that_take_it(site: str) -> None:
    (script,) = (p for p in _assets("js") if "/index-" in f"/{p}")
    plain = httpx.get(f"{site}/{script}", headers={"accept-encoding": "identity"})
    assert plain.status_code == 200
    assert plain.content == (DIST_DIR / script).read_bytes()
    assert plain.headers["content-type"] == "text/javascript; charset=utf-8"
    assert plain.headers["cache-control"] == IMMUTABLE
    with httpx.stream("GET", f"{site}/{script}", headers={"accept-encoding": "gzip"}) as zipped:
        assert zipped.headers["content-encoding"] == "gzip"
        wire = b"".join(zipped.iter_raw())
    assert gzip.decompress(wire) == plain.content
    assert len(wire) < len(plain.content) / 2


def test_a_file_the_build_does_not_have_is_a_404_not_the_app(site: str) -> None:
    response = httpx.get(f"{site}/assets/index-00000000.js")
    assert response.status_code == 404
    assert "<html" not in response.text


def test_the_api_keeps_its_own_404s_and_pages_take_only_get(site: str) -> None:
    for path in ("/api/v1/nothing-here", "/api/nothing", "/media/not-a-key.png"):
        response = httpx.get(site + path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json", path
    posted = httpx.post(f"{site}/some/page")
    assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")


def test_the_api_reference_is_a_page_of_its_own(site: str) -> None:
    response = httpx.get(f"{site}/api/docs")
    assert response.text == (DIST_DIR / "docs.html").read_text()
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    document = httpx.get(f"{site}/api/v1/openapi.json").json()
    assert "/api/v1/posts" in document["paths"]


def test_a_bundle_is_typed_and_cached_by_where_its_files_are(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    with pytest.raises(BundleError, match="make web"):
        bundle(dist)
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html>")
    (dist / "docs.html").write_text("<!doctype html>")
    (dist / "assets" / "app-1a2b3c.js").write_text("export {}")
    (dist / "favicon.svg").write_text("<svg/>")
    files = {f.path: f for f in bundle(dist, Path("/srv/web"))}
    assert set(files) == {"/", "/api/docs", "/assets/app-1a2b3c.js", "/favicon.svg"}
    assert files["/assets/app-1a2b3c.js"].cache_control == IMMUTABLE
    assert files["/assets/app-1a2b3c.js"].file == "/srv/web/assets/app-1a2b3c.js"
    assert files["/"].cache_control == files["/api/docs"].cache_control == NO_CACHE
    assert files["/favicon.svg"].content_type == "image/svg+xml"
    (dist / "notes.md").write_text("#")
    with pytest.raises(BundleError, match="no content type"):
        bundle(dist)
