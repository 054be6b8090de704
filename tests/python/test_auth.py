"""Bearer authentication through vmcp with the official Python SDK (mcp==2.3.0).

Runs only when VMCP_BAD_TOKENS is set (a JSON object: label -> token the gateway must refuse),
as scripts/e2e-python.sh does against a vmcp with `incomingAuth: oidc`. The good token
(VMCP_BEARER) is exercised by test_client.py; here each bad one must be refused with 401 and a
`WWW-Authenticate: Bearer ... error="invalid_token"` challenge, and the SDK must fail in both modes.
"""

from __future__ import annotations

import json
import os

import anyio
import httpx2
import pytest
from conftest import Settings, modes
from mcp_helpers import connect

pytestmark = pytest.mark.anyio

BAD = json.loads(os.environ.get("VMCP_BAD_TOKENS", "{}"))
if not BAD:
    # Run by scripts/e2e-python.sh against an OIDC-protected gateway; never skipped quietly.
    pytest.fail("VMCP_BAD_TOKENS is not set: run these tests through scripts/e2e-python.sh", pytrace=False)


@pytest.mark.parametrize("label", sorted(BAD))
async def test_bad_token_is_refused_with_a_challenge(settings: Settings, label: str) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    async with httpx2.AsyncClient(timeout=settings.timeout) as http:
        resp = await http.post(
            settings.url,
            json=body,
            headers={"Authorization": f"Bearer {BAD[label]}", "Accept": "application/json, text/event-stream"},
        )
    assert resp.status_code == 401, f"{label}: {resp.status_code} {resp.text}"
    challenge = resp.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer "), challenge
    assert 'error="invalid_token"' in challenge, challenge
    assert "resource_metadata=" in challenge, challenge


@pytest.mark.parametrize("mode", modes())
@pytest.mark.parametrize("label", sorted(BAD))
async def test_sdk_fails_with_a_bad_token(settings: Settings, mode: str, label: str) -> None:
    with pytest.raises(BaseException):  # noqa: B017 - the SDK wraps HTTP errors in exception groups
        with anyio.fail_after(settings.timeout):
            async with connect(settings.url, mode, bearer=BAD[label], timeout=settings.timeout) as client:
                await client.list_tools()
