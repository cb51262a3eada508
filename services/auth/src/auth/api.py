"""The auth service's REST API (reached through the gateway)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import msgspec
from msgspec import UNSET
from social_common.errors import Problem
from social_common.pagination import next_link, page_limit
from social_common.ratelimit import Limit, RateLimiter, RateLimitResult, raise_if_limited
from social_common.rest import client_ip, json_response, read_model
from social_common.tokens import TokenVerifier, authenticate, authenticate_optional
from social_common.validation import field_error
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from auth import views
from auth.export import Exporter
from auth.keys import KeyRing
from auth.service import AuthService, Tokens
from auth.settings import AuthSettings

# Browsers keep the refresh token in a cookie that scripts cannot read and that
# only the token paths receive (refresh, revoke). A client asks for it with
# this header, which is also the guard against cross-site requests: another
# site's page cannot send a custom header without a CORS preflight, which the
# gateway never grants, and SameSite=Strict keeps the cookie off its requests.
COOKIE_MODE_HEADER = "x-refresh-cookie"
REFRESH_COOKIE = "__Secure-refresh-token"
REFRESH_COOKIE_PATH = "/api/v1/users/token"
CROSS_SITE = Problem(403, "cross_site", "The session cookie is only used by this site's pages.")


class AuthApi:
    def __init__(
        self,
        service: AuthService,
        keys: KeyRing,
        exporter: Exporter,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        settings: AuthSettings,
    ) -> None:
        self.service = service
        self.keys = keys
        self.exporter = exporter
        self.verifier = verifier
        self.limiter = limiter
        self.settings = settings

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route("/api/v1/users/register", self.register, methods=["POST"]),
            Route("/api/v1/users/login", self.login, methods=["POST"]),
            Route("/api/v1/users/token/refresh", self.refresh, methods=["POST"]),
            Route("/api/v1/users/token/revoke", self.logout, methods=["POST"]),
            Route("/api/v1/users/logout", self.logout, methods=["POST"]),
            Route("/api/v1/users/password", self.change_password, methods=["POST"]),
            Route("/api/v1/users/profile", self.profile, methods=["GET", "PATCH"]),
            Route("/api/v1/users/profile", self.delete_account, methods=["DELETE"]),
            Route("/api/v1/users/profile/export", self.export, methods=["GET"]),
            Route("/api/v1/users/{username}", self.user, methods=["GET"]),
            Route("/api/v1/users/{username}/follow", self.follow, methods=["POST", "DELETE"]),
            Route("/api/v1/users/{username}/followers", self.followers, methods=["GET"]),
            Route("/api/v1/users/{username}/following", self.following, methods=["GET"]),
        ]

    async def _limit(self, *limits: Limit) -> RateLimitResult:
        result = await self.limiter.hit(*limits)
        raise_if_limited(result)
        return result

    async def jwks(self, _request: Request) -> Response:
        # Readers may cache it as long as a new key waits before it signs.
        return json_response(
            msgspec.convert(await self.keys.jwks(), views.Jwks),
            headers={"Cache-Control": f"public, max-age={self.settings.jwks_cache_seconds}"},
        )

    async def register(self, request: Request) -> Response:
        limited = await self._limit(
            Limit("register_ip", client_ip(request), self.settings.register_per_ip)
        )
        body = await read_model(request, views.Registration)
        user = await self.service.register(body.username, body.email, body.password)
        return json_response(views.own_user(user), 201, headers=limited.headers())

    async def login(self, request: Request) -> Response:
        body = await read_model(request, views.Login)
        username = None if body.username is UNSET else body.username
        email = None if body.email is UNSET else body.email
        if (username is None) == (email is None):
            raise field_error("email", "give either email or username")
        account = (email or username or "").strip().lower()
        limited = await self._limit(
            Limit("login_account", account, self.settings.login_per_account),
            Limit("login_ip", client_ip(request), self.settings.login_per_ip),
        )
        tokens = await self.service.login(username=username, email=email, password=body.password)
        return self._session(request, tokens, limited.headers())

    async def refresh(self, request: Request) -> Response:
        token = await self._presented_refresh_token(request)
        try:
            tokens = await self.service.refresh(token)
        except Problem as refused:
            if not _cookie_mode(request):
                raise
            # A cookie that no longer works is cleared: the page signs out.
            cleared = {**refused.headers, "set-cookie": self._refresh_cookie("", 0)}
            raise Problem(
                refused.status, refused.code, refused.detail, title=refused.title, headers=cleared
            ) from None
        return self._session(request, tokens)

    async def logout(self, request: Request) -> Response:
        await self.service.logout(await self._presented_refresh_token(request))
        response = Response(status_code=204)
        if _cookie_mode(request):
            response.headers["set-cookie"] = self._refresh_cookie("", 0)
        return response

    def _session(
        self, request: Request, tokens: Tokens, headers: Mapping[str, str] | None = None
    ) -> Response:
        """The session as JSON; in cookie mode its refresh token goes in the
        cookie instead."""
        session = views.session(tokens)
        if not _cookie_mode(request):
            return json_response(session, headers=headers)
        cookie = self._refresh_cookie(tokens.refresh_token, tokens.refresh_expires_in)
        return json_response(
            msgspec.structs.replace(session, refresh_token=UNSET),
            headers={**(headers or {}), "set-cookie": cookie},
        )

    async def _presented_refresh_token(self, request: Request) -> str:
        """The refresh token of a refresh or a revocation: the cookie's in
        cookie mode (from this site's pages only), else the JSON body's."""
        if not _cookie_mode(request):
            if "content-type" not in request.headers and not await request.body():
                return ""  # none presented: refused as any unknown token is
            return (await read_model(request, views.RefreshToken)).refresh_token
        # Fetch metadata, where the browser sends it, must agree.
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise CROSS_SITE
        return request.cookies.get(REFRESH_COOKIE, "")

    def _refresh_cookie(self, token: str, max_age: int) -> str:
        return (
            f"{REFRESH_COOKIE}={token}; Path={REFRESH_COOKIE_PATH}; Max-Age={max_age}; "
            "HttpOnly; Secure; SameSite=Strict"
        )

    async def change_password(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        limited = await self._limit(
            Limit("password_account", claims.subject, self.settings.login_per_account)
        )
        body = await read_model(request, views.PasswordChange)
        await self.service.change_password(claims.user_id, body.current_password, body.new_password)
        return Response(status_code=204, headers=limited.headers())

    async def delete_account(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        limited = await self._limit(
            Limit("password_account", claims.subject, self.settings.login_per_account)
        )
        body = await read_model(request, views.AccountDeletion)
        await self.service.delete_account(claims.user_id, body.password)
        return Response(status_code=204, headers=limited.headers())

    async def export(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        limited = await self._limit(
            Limit("export_account", claims.subject, self.settings.export_per_account)
        )
        username, archive = await self.exporter.archive(claims.user_id)
        filename = f"{username}-{datetime.now(UTC):%Y%m%d}.json"
        return StreamingResponse(
            archive,
            media_type="application/json",
            headers={
                **limited.headers(),
                "content-disposition": f'attachment; filename="{filename}"',
            },
        )

    async def profile(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        user_id = claims.user_id
        if request.method == "GET":
            return json_response(views.own_user(await self.service.me(user_id)))
        body = await read_model(request, views.ProfileChange)
        changes = {
            name: value
            for name in views.ProfileChange.__struct_fields__
            if (value := getattr(body, name)) is not UNSET
        }
        return json_response(views.own_user(await self.service.update_profile(user_id, changes)))

    async def user(self, request: Request) -> Response:
        viewer = await authenticate_optional(request, self.verifier)
        user = await self.service.by_username(request.path_params["username"])
        followed_by_me = (
            UNSET if viewer is None else await self.service.is_following(viewer.user_id, user.id)
        )
        return json_response(views.public_user(user, followed_by_me))

    async def follow(self, request: Request) -> Response:
        claims = await authenticate(request, self.verifier)
        await self.service.follow(
            claims.user_id,
            request.path_params["username"],
            on=request.method == "POST",
        )
        return Response(status_code=204)

    async def followers(self, request: Request) -> Response:
        return await self._follow_page(request, "followers")

    async def following(self, request: Request) -> Response:
        return await self._follow_page(request, "following")

    async def _follow_page(self, request: Request, direction: str) -> Response:
        user = await self.service.by_username(request.path_params["username"])
        page, next_cursor = await self.service.follow_page(
            direction,
            user.id,
            request.query_params.get("cursor"),
            page_limit(request.query_params.get("limit")),
        )
        return json_response(
            views.follow_page(page, next_cursor), headers=next_link(request.url, next_cursor)
        )


def _cookie_mode(request: Request) -> bool:
    return request.headers.get(COOKIE_MODE_HEADER) == "1"
