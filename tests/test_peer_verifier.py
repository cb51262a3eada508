"""Any service verifies access tokens on its own, with keys fetched from auth over gRPC."""

from __future__ import annotations

import asyncio

import pytest
from social_common.peers import channel, token_verifier
from social_common.settings import Settings
from social_common.tokens import InvalidToken
from social_stack.local import Endpoints
from social_stack.testing import create_account


def test_a_peer_verifies_real_tokens_and_refuses_others(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)

    async def scenario() -> str:
        async with channel(stack.services_grpc["auth"]) as auth:
            verifier = token_verifier(Settings(service="posts"), auth, revoked=frozenset())
            claims = await verifier.verify(account.access_token)
            with pytest.raises(InvalidToken):
                await verifier.verify(account.refresh_token)
            with pytest.raises(InvalidToken):
                await verifier.verify(account.access_token[:-4] + "AAAA")
            return claims.subject

    assert asyncio.run(scenario()) == account.id
