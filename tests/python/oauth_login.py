"""A real OAuth login through vmcp with the official Python SDK (mcp==2.3.0), then tool calls.

    python oauth_login.py URL [--mode legacy|2026-07-28] [--tool whoami] [--seconds 0]
                              [--interval 0.2] [--concurrency 1]

The SDK's `OAuthClientProvider` discovers vmcp's authorization server from the protected
resource metadata, registers a public client (RFC 7591), runs authorization code + PKCE. The
browser is played here: the authorization URL is followed hop by hop (vmcp's /authorize, the
upstream IdP, which approves at once, vmcp's callback) until a redirect reaches the client's own
redirect URI, whose `code`, `state` and `iss` go back to the SDK.

Then the tool is called once, and again every `--interval` seconds for `--seconds` seconds
(`--concurrency` calls at a time). Each call prints one JSON line:
    {"call": n, "sent": unix_seconds, "done": unix_seconds, "text": "...", "error": null}
and the last line is a summary:
    {"summary": true, "logins": N, "calls": N, "errors": N}
A login beyond the first (the SDK re-authorizing after a 401) shows in `logins`. The exit status
is 0 unless the script itself failed (the caller judges the lines).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from urllib.parse import parse_qs, urljoin, urlparse

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"  # never listened on: the browser stops there
MAX_HOPS = 16


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Browser:
    """Follows an authorization URL to the client's redirect URI, as a user agent would."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.logins = 0
        self.result: AuthorizationCodeResult | None = None

    async def redirect(self, url: str) -> None:
        self.logins += 1
        async with httpx2.AsyncClient(follow_redirects=False, timeout=self.timeout) as http:
            for _ in range(MAX_HOPS):
                if url.startswith(REDIRECT_URI):
                    q = parse_qs(urlparse(url).query)
                    if "error" in q:
                        raise RuntimeError(f"authorization refused: {q}")
                    self.result = AuthorizationCodeResult(
                        code=q["code"][0],
                        state=q.get("state", [None])[0],
                        iss=q.get("iss", [None])[0],
                    )
                    return
                resp = await http.get(url)
                if resp.status_code not in (301, 302, 303, 307, 308):
                    raise RuntimeError(f"{url}: HTTP {resp.status_code}: {resp.text[:300]}")
                url = urljoin(url, resp.headers["location"])
        raise RuntimeError("too many redirects during login")

    async def callback(self) -> AuthorizationCodeResult:
        if self.result is None:
            raise RuntimeError("no authorization result")
        result, self.result = self.result, None
        return result


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--mode", default="legacy")
    p.add_argument("--tool", default="whoami")
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0)
    a = p.parse_args()

    browser = Browser(a.timeout)
    auth = OAuthClientProvider(
        server_url=a.url,
        client_metadata=OAuthClientMetadata(
            client_name="vmcp-login-test",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=MemoryStorage(),
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )
    calls = errors = 0
    async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(a.timeout, read=a.timeout)) as http:
        transport = streamable_http_client(a.url, http_client=http)
        async with Client(transport, mode=a.mode, cache=None, read_timeout_seconds=a.timeout) as client:

            async def one() -> None:
                nonlocal calls, errors
                calls += 1
                n = calls
                sent = time.time()
                text, error = None, None
                try:
                    result = await client.call_tool(a.tool, {})
                    text = "".join(c.text for c in result.content if getattr(c, "type", None) == "text")
                    if result.is_error:
                        error = text
                except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
                    error = f"{type(e).__name__}: {e}"
                if error is not None:
                    errors += 1
                print(json.dumps({"call": n, "sent": sent, "done": time.time(), "text": text, "error": error}), flush=True)

            start = time.monotonic()
            while True:
                async with anyio.create_task_group() as tg:
                    for _ in range(a.concurrency):
                        tg.start_soon(one)
                if time.monotonic() - start >= a.seconds:
                    break
                await anyio.sleep(a.interval)
    print(json.dumps({"summary": True, "logins": browser.logins, "calls": calls, "errors": errors}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
