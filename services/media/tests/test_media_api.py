"""Uploads through the gateway, stored in the real bucket, served back through /media."""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import psycopg
import pytest
import redis
from PIL import Image
from social.events.v1.events_pb2 import Envelope
from social.media.v1 import media_pb2, media_pb2_grpc
from social.posts.v1.events_pb2 import PostDeleted
from social_common.ids import uuid7
from social_stack.local import Endpoints, Ports
from social_stack.testing import (
    Account,
    answers,
    client,
    create_account,
    event_handled,
    publish,
    wait_until,
)


def _jpeg(width: int = 300, height: int = 200, *, exif: bool = False, quality: int = 90) -> bytes:
    image = Image.new("RGB", (width, height), (20, 120, 200))
    # A marker in the top-left corner tells which way up the image is.
    image.paste((250, 10, 10), (0, 0, width // 4, height // 4))
    out = io.BytesIO()
    if exif:
        tags = Image.Exif()
        tags[0x0112] = 6  # Orientation: rotate 90° clockwise to display
        tags[0x010F] = "SecretCameraMaker"
        gps = tags.get_ifd(0x8825)
        gps[1] = "N"
        gps[2] = (48.0, 51.0, 29.0)
        image.save(out, "JPEG", quality=quality, exif=tags)
    else:
        image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _noise_jpeg(width: int, height: int) -> bytes:
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _upload(
    stack: Endpoints,
    account: Account,
    data: bytes,
    *,
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
    path: str = "/api/v1/media",
    field: str = "file",
    description: str | None = None,
) -> httpx.Response:
    with client(stack.gateway_url) as http:
        return http.post(
            path,
            headers=account.auth,
            files={field: (filename, data, content_type)},
            data={"description": description} if description is not None else None,
        )


def _fetch(url: str) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=15) as http:
        return http.get(url)


def test_upload_is_upright_clean_and_served_with_safe_headers(
    stack: Endpoints, account: Account
) -> None:
    response = _upload(stack, account, _jpeg(exif=True), description="A blue square")
    assert response.status_code == 201, response.text
    media = response.json()
    # Orientation 6 turns the 300x200 image into a 200x300 one.
    assert (media["width"], media["height"]) == (200, 300)
    assert media["type"] == "image"
    assert media["state"] == "pending"
    assert media["description"] == "A blue square"
    assert len(media["blurhash"]) >= 6
    assert media["variants"][0]["name"] == "original"
    assert media["url"] == media["variants"][0]["url"]
    assert "photo" not in media["url"]  # keys never come from the client's name
    for variant in media["variants"]:
        served = _fetch(variant["url"])
        assert served.status_code == 200
        assert served.headers["x-content-type-options"] == "nosniff"
        assert served.headers["content-security-policy"] == "default-src 'none'"
        assert "immutable" in served.headers["cache-control"]
        assert b"Exif" not in served.content
        assert b"SecretCameraMaker" not in served.content
        image = Image.open(io.BytesIO(served.content))
        assert served.headers["content-type"] == Image.MIME[image.format or ""]
        assert (image.width, image.height) == (variant["width"], variant["height"])
        assert not image.getexif()
    original = Image.open(io.BytesIO(_fetch(media["url"]).content)).convert("RGB")
    # After turning clockwise, the red marker sits at the top-right corner.
    red, green, _ = original.getpixel((original.width - 5, 5))  # type: ignore[misc]
    assert red > 200
    assert green < 60


def test_the_seed_path_accepts_the_image_field(stack: Endpoints, account: Account) -> None:
    response = _upload(stack, account, _jpeg(), path="/api/v1/upload/image", field="image")
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("data", "filename", "content_type"),
    [
        (b"<html><body><script>alert(1)</script></body></html>", "x.jpg", "image/jpeg"),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            b"<script>alert(1)</script></svg>",
            "x.svg",
            "image/svg+xml",
        ),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "x.png", "image/png"),
    ],
    ids=["html-as-jpeg", "svg", "pdf-as-png"],
)
def test_what_does_not_decode_as_an_image_is_415(
    stack: Endpoints, account: Account, data: bytes, filename: str, content_type: str
) -> None:
    response = _upload(stack, account, data, filename=filename, content_type=content_type)
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_type"


def _png_declaring(width: int, height: int) -> bytes:

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_a_small_png_declaring_fifty_thousand_squared_pixels_is_refused(
    stack: Endpoints, account: Account
) -> None:
    response = _upload(stack, account, _png_declaring(50_000, 50_000), content_type="image/png")
    assert response.status_code == 413
    assert response.json()["code"] == "too_many_pixels"


def test_over_ten_mib_is_413(stack: Endpoints, account: Account) -> None:
    response = _upload(stack, account, b"\xff\xd8" + os.urandom(10 * 1024 * 1024 + 10))
    assert response.status_code == 413


def test_a_jpeg_with_a_zip_appended_is_stored_without_it(
    stack: Endpoints, account: Account
) -> None:
    zip_tail = b"PK\x03\x04" + b"\x00" * 26 + b"secret.txt" + b"top secret payload"
    response = _upload(stack, account, _jpeg() + zip_tail)
    assert response.status_code == 201
    for variant in response.json()["variants"]:
        content = _fetch(variant["url"]).content
        assert b"PK\x03\x04" not in content
        assert b"top secret payload" not in content


def test_another_users_media_is_404_on_every_route(stack: Endpoints, account: Account) -> None:
    media_id = _upload(stack, account, _jpeg()).json()["id"]
    stranger = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        seen = http.get(f"/api/v1/media/{media_id}", headers=stranger.auth)
        patched = http.patch(
            f"/api/v1/media/{media_id}", headers=stranger.auth, json={"description": "mine now"}
        )
        deleted = http.delete(f"/api/v1/media/{media_id}", headers=stranger.auth)
        mine = http.get(f"/api/v1/media/{media_id}", headers=account.auth)
        anonymous = http.get(f"/api/v1/media/{media_id}")
        garbage = http.get("/api/v1/media/not-a-uuid", headers=account.auth)
    assert (seen.status_code, patched.status_code, deleted.status_code) == (404, 404, 404)
    assert mine.status_code == 200
    assert mine.json()["description"] == ""
    assert anonymous.status_code == 401
    assert garbage.status_code == 404


def test_describe_and_delete_own_media(stack: Endpoints, account: Account) -> None:
    media = _upload(stack, account, _jpeg()).json()
    with client(stack.gateway_url) as http:
        described = http.patch(
            f"/api/v1/media/{media['id']}", headers=account.auth, json={"description": "Alt text"}
        )
        too_long = http.patch(
            f"/api/v1/media/{media['id']}", headers=account.auth, json={"description": "x" * 1501}
        )
        deleted = http.delete(f"/api/v1/media/{media['id']}", headers=account.auth)
        gone = http.get(f"/api/v1/media/{media['id']}", headers=account.auth)
    assert described.json()["description"] == "Alt text"
    assert too_long.status_code == 422
    assert (deleted.status_code, gone.status_code) == (204, 404)
    assert _fetch(media["url"]).status_code in (403, 404)


def test_media_routes_need_a_token(stack: Endpoints) -> None:
    with client(stack.gateway_url) as http:
        response = http.post("/api/v1/media", files={"file": ("a.jpg", _jpeg(), "image/jpeg")})
    assert response.status_code == 401


def test_uploads_are_limited_to_thirty_per_half_hour_per_user(
    stack: Endpoints, account: Account
) -> None:
    tiny = _jpeg(16, 16)
    statuses = [_upload(stack, account, tiny).status_code for _ in range(31)]
    assert statuses == [201] * 30 + [429]


def test_a_saturated_processing_pool_answers_503_with_retry_after(stack: Endpoints) -> None:
    # The test stack has one worker and room for one more upload waiting.
    heavy = _noise_jpeg(3000, 2200)  # about 6 MB: under the 10 MiB limit
    uploaders = [create_account(stack.gateway_url) for _ in range(6)]
    responses: list[httpx.Response] = []
    barrier = threading.Barrier(len(uploaders))

    def upload(account: Account) -> None:
        barrier.wait()
        responses.append(_upload(stack, account, heavy))

    threads = [threading.Thread(target=upload, args=(a,)) for a in uploaders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in responses)
    assert 201 in statuses
    busy = [r for r in responses if r.status_code == 503]
    assert busy, statuses
    assert busy[0].json()["code"] == "busy"
    assert busy[0].headers["retry-after"] == "2"


def test_direct_upload_through_a_presigned_post(stack: Endpoints, account: Account) -> None:
    with client(stack.gateway_url) as http:
        created = http.post(
            "/api/v1/media/uploads",
            headers=account.auth,
            json={"content_type": "image/jpeg", "description": "Straight to S3"},
        )
        assert created.status_code == 201, created.text
        upload = created.json()
        with httpx.Client(trust_env=False, timeout=15) as s3:
            wrong_type = s3.post(
                upload["url"],
                data={**upload["fields"], "Content-Type": "text/html"},
                files={"file": ("x.html", b"<html></html>", "text/html")},
            )
            stored = s3.post(
                upload["url"],
                data=upload["fields"],
                files={"file": ("x.jpg", _jpeg(exif=True), "image/jpeg")},
            )
        assert wrong_type.status_code >= 400
        assert stored.status_code in (200, 201, 204), stored.text
        completed = http.post(
            f"/api/v1/media/uploads/{upload['id']}/complete", headers=account.auth
        )
        again = http.post(f"/api/v1/media/uploads/{upload['id']}/complete", headers=account.auth)
    assert completed.status_code == 201, completed.text
    media = completed.json()
    assert (media["width"], media["height"], media["description"]) == (200, 300, "Straight to S3")
    assert b"SecretCameraMaker" not in _fetch(media["url"]).content
    assert again.status_code == 404


def test_direct_upload_of_html_is_refused_on_completion(stack: Endpoints, account: Account) -> None:
    with client(stack.gateway_url) as http:
        upload = http.post(
            "/api/v1/media/uploads", headers=account.auth, json={"content_type": "image/png"}
        ).json()
        with httpx.Client(trust_env=False, timeout=15) as s3:
            s3.post(
                upload["url"],
                data=upload["fields"],
                files={"file": ("x.png", b"<html>not an image</html>", "image/png")},
            )
        completed = http.post(
            f"/api/v1/media/uploads/{upload['id']}/complete", headers=account.auth
        )
    assert completed.status_code == 415


def _media_stub(stack: Endpoints) -> tuple[grpc.Channel, media_pb2_grpc.MediaServiceStub]:
    channel = grpc.insecure_channel(stack.services_grpc["media"])
    return channel, media_pb2_grpc.MediaServiceStub(channel)


def test_grpc_get_media_checks_ownership_and_attach_is_all_or_nothing(
    stack: Endpoints, account: Account
) -> None:
    first = _upload(stack, account, _jpeg()).json()["id"]
    second = _upload(stack, account, _jpeg()).json()["id"]
    other = create_account(stack.gateway_url)
    theirs = _upload(stack, other, _jpeg()).json()["id"]
    post, another_post = str(uuid.uuid4()), str(uuid.uuid4())
    channel, stub = _media_stub(stack)
    with channel:
        found = stub.GetMedia(
            media_pb2.GetMediaRequest(ids=[first, second, theirs], owner_id=account.id), timeout=5
        )
        assert sorted(m.id for m in found.media) == sorted([first, second])
        assert all(m.state == media_pb2.MEDIA_STATE_PENDING for m in found.media)
        assert all(m.url.startswith(stack.gateway_url + "/media/") for m in found.media)
        with pytest.raises(grpc.RpcError) as partial:
            stub.AttachMedia(
                media_pb2.AttachMediaRequest(ids=[first, theirs], post_id=post, owner_id=account.id)
            )
        assert partial.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        both = media_pb2.AttachMediaRequest(ids=[first, second], post_id=post, owner_id=account.id)
        stub.AttachMedia(both)
        stub.AttachMedia(both)  # a retry succeeds
        with pytest.raises(grpc.RpcError) as taken:
            stub.AttachMedia(
                media_pb2.AttachMediaRequest(ids=[first], post_id=another_post, owner_id=account.id)
            )
        assert taken.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        attached = stub.GetMedia(media_pb2.GetMediaRequest(ids=[first], owner_id=account.id))
    assert attached.media[0].state == media_pb2.MEDIA_STATE_ATTACHED
    assert attached.media[0].post_id == post
    with client(stack.gateway_url) as http:
        refused = http.delete(f"/api/v1/media/{first}", headers=account.auth)
    assert (refused.status_code, refused.json()["code"]) == (409, "media_attached")


def test_unattached_media_is_swept_after_its_time(stack: Endpoints, account: Account) -> None:
    media = _upload(stack, account, _jpeg()).json()
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE media.media SET created_at = now() - interval '25 hours' WHERE id = %s",
            (media["id"],),
        )
        wait_until(
            lambda: (
                not conn.execute(
                    "SELECT 1 FROM media.media WHERE id = %s", (media["id"],)
                ).fetchone()
            ),
            what="the sweeper",
        )
    for variant in media["variants"]:
        assert _fetch(variant["url"]).status_code in (403, 404)


@pytest.fixture
def media_without_s3(stack: Endpoints) -> Iterator[str]:
    """A second media service on the same database whose S3 is unreachable."""
    http_port, grpc_port = Ports.free().services["media"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    env = {
        **os.environ,
        **stack.service_env("media"),
        "HTTP_PORT": str(http_port),
        "GRPC_PORT": str(grpc_port),
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{dead_port}",
    }
    process = subprocess.Popen([sys.executable, "-m", "media"], env=env)
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_until(answers(f"{base}/healthz", 200), timeout=20, what="media without S3")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_s3_down_answers_503_and_leaves_no_row(
    stack: Endpoints, account: Account, media_without_s3: str
) -> None:
    with client(media_without_s3) as http:
        ready = http.get("/readyz")
        response = http.post(
            "/api/v1/media",
            headers=account.auth,
            files={"file": ("a.jpg", _jpeg(), "image/jpeg")},
        )
    assert ready.status_code == 503
    assert ready.json()["checks"]["s3"].startswith("failing")
    assert response.status_code == 503
    assert response.json()["code"] == "storage_unavailable"
    with psycopg.connect(stack.database_admin_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM media.media WHERE owner_id = %s", (account.id,)
        ).fetchone()
    assert rows == (0,)


def _post_deleted(post_id: str, author_id: str, media_ids: list[str]) -> Envelope:
    """An envelope as the posts service publishes it."""
    payload = PostDeleted(post_id=post_id, author_id=author_id, media_ids=media_ids)
    return _envelope(post_id, payload.SerializeToString())


def _envelope(key: str, payload: bytes) -> Envelope:
    envelope = Envelope(
        id=str(uuid7()),
        type="post.deleted",
        version=1,
        producer="posts",
        key=key,
        payload=payload,
    )
    envelope.time.GetCurrentTime()
    return envelope


def _acknowledged(events: redis.Redis, published: tuple[str, str]) -> Callable[[], bool]:
    return event_handled(events, published, "media")


def _attach(stack: Endpoints, ids: list[str], post_id: str, owner_id: str) -> None:
    channel, stub = _media_stub(stack)
    with channel:
        stub.AttachMedia(
            media_pb2.AttachMediaRequest(ids=ids, post_id=post_id, owner_id=owner_id), timeout=5
        )


def _status(stack: Endpoints, account: Account, media_id: str) -> int:
    with client(stack.gateway_url) as http:
        return http.get(f"/api/v1/media/{media_id}", headers=account.auth).status_code


def _objects_gone(media: dict[str, Any]) -> bool:
    return all(_fetch(v["url"]).status_code in (403, 404) for v in media["variants"])


def test_deleting_a_post_deletes_its_media_and_no_other(
    stack: Endpoints, account: Account, events: redis.Redis
) -> None:
    post, another_post = str(uuid7()), str(uuid7())
    mine = [_upload(stack, account, _jpeg()).json() for _ in range(2)]
    on_another_post = _upload(stack, account, _jpeg()).json()
    other = create_account(stack.gateway_url)
    theirs = _upload(stack, other, _jpeg()).json()
    _attach(stack, [m["id"] for m in mine], post, account.id)
    _attach(stack, [on_another_post["id"]], another_post, account.id)
    # Not possible through the posts service; still, only the author's media goes.
    _attach(stack, [theirs["id"]], post, other.id)

    deleted = _post_deleted(post, account.id, [m["id"] for m in mine])
    published = publish(events, deleted)
    wait_until(
        lambda: all(_status(stack, account, m["id"]) == 404 and _objects_gone(m) for m in mine),
        what="the post's media deleted",
    )
    wait_until(_acknowledged(events, published), what="post.deleted acknowledged")

    # At least once: the same event again finds nothing and succeeds.
    wait_until(_acknowledged(events, publish(events, deleted)), what="redelivery acknowledged")
    for owner, kept in ((account, on_another_post), (other, theirs)):
        assert _status(stack, owner, kept["id"]) == 200
        assert all(_fetch(v["url"]).status_code == 200 for v in kept["variants"])


def test_a_malformed_post_deleted_event_is_logged_and_done(
    stack: Endpoints, account: Account, events: redis.Redis
) -> None:
    media = _upload(stack, account, _jpeg()).json()
    post = str(uuid7())
    _attach(stack, [media["id"]], post, account.id)
    malformed = [
        _post_deleted("not-a-uuid", account.id, [media["id"]]),
        _post_deleted(post, "", [media["id"]]),
        _envelope(post, b"\xff\xff not a PostDeleted"),
    ]
    for envelope in malformed:
        wait_until(_acknowledged(events, publish(events, envelope)), what="malformed event done")
    assert _status(stack, account, media["id"]) == 200
