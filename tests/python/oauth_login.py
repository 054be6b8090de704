"""A real OAuth login through vmcp with the official Python SDK (mcp==2.3.0), then tool calls.

    python oauth_login.py URL [--mode legacy|2026-07-28] [--tool whoami] [--seconds 0]
                              [--interval 0.2] [--concurrency 1] [--login-hint USER]
                              [--list] [--interactive]

The SDK's `OAuthClientProvider` discovers vmcp's authorization server from the protected
resource metadata, registers a public client (RFC 7591), runs authorization code + PKCE. The
browser is played here: the authorization URL is followed hop by hop (vmcp's /authorize, the
upstream IdP, which approves at once, vmcp's callback) until a redirect reaches the client's own
redirect URI, whose `code`, `state` and `iss` go back to the SDK. With `--login-hint USER`, the
hop that leaves vmcp for the upstream IdP gets `login_hint=USER` (the test IdP logs that user in).

With `--list`, the tool names are printed first: {"tools": ["name", ...]}.

Then the tool is called once, and again every `--interval` seconds for `--seconds` seconds
(`--concurrency` calls at a time). Each call prints one JSON line:
    {"call": n, "sent": unix_seconds, "done": unix_seconds, "text": "...", "error": null}
and the last line is a summary:
    {"summary": true, "logins": N, "calls": N, "errors": N, "statuses": {"200": N, ...},
     "token": "..."}
A login beyond the first (the SDK re-authorizing after a 401) shows in `logins`; `statuses` counts
the HTTP statuses of the SDK's requests to the MCP URL; `token` is a fingerprint (not the token) of
the vmcp access token the SDK holds. The exit status is 0 unless the script itself failed (the
caller judges the lines).

With `--interactive`, the loop is replaced by commands read from stdin, one per line, each answered
with exactly one JSON line (EOF or `quit` ends the session and prints the summary):
    call [TOOL]   one call through the SDK: a call line as above
    list          {"tools": [...]}, fetched from the server
    raw [TOOL]    the SDK's last tools/call request (session and protocol headers, body) sent again
                  by plain HTTP with the vmcp access token the SDK holds now, and TOOL if given;
                  before any tools/call, a plain tools/call of TOOL (or --tool) with the headers of
                  the SDK's last POST (Legacy: its session):
                  {"raw": status, "retry_after": ..., "www_authenticate": ..., "body": ...}
    state         {"state": true, "logins": N, "token": fingerprint, "statuses": {...}}
    loglevel L    logging/setLevel L through the SDK (Legacy): {"loglevel": L, "error": ...}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from urllib.parse import parse_qs, urlencode, urljoin, urlparse, urlunparse

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

    def __init__(self, timeout: float, origin: str, login_hint: str | None) -> None:
        self.timeout = timeout
        self.origin = origin
        self.login_hint = login_hint
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
                if self.login_hint is not None and origin_of(url) != self.origin:
                    url = add_query(url, "login_hint", self.login_hint)
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


def origin_of(url: str) -> str:
    u = urlparse(url)
    return f"{u.scheme}://{u.netloc}"


def add_query(url: str, key: str, value: str) -> str:
    u = urlparse(url)
    q = parse_qs(u.query, keep_blank_values=True)
    q[key] = [value]
    return urlunparse(u._replace(query=urlencode(q, doseq=True)))


def fingerprint(token: str | None) -> str | None:
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else None


class Wire:
    """What the SDK sent to and got from the MCP URL: status counts and its last tools/call."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: dict[str, int] = {}
        self.last_call: tuple[dict[str, str], dict] | None = None
        self.last_headers: dict[str, str] | None = None

    async def on_request(self, request: httpx2.Request) -> None:
        if str(request.url) != self.url or request.method != "POST":
            return
        try:
            body = json.loads(request.content)
        except (ValueError, httpx2.RequestNotRead):
            return
        # Set anew on each request: credentials and framing.
        own = ("authorization", "content-length", "host")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in own}
        # Per-method headers (2026-07-28) belong to that request only.
        per_method = ("mcp-method", "mcp-name")
        self.last_headers = {k: v for k, v in headers.items() if k.lower() not in per_method}
        if isinstance(body, dict) and body.get("method") == "tools/call":
            self.last_call = (headers, body)

    async def on_response(self, response: httpx2.Response) -> None:
        if str(response.request.url) == self.url:
            key = str(response.status_code)
            self.statuses[key] = self.statuses.get(key, 0) + 1


async def raw_call(
    wire: Wire, token: str | None, tool: str | None, default_tool: str, n: int, timeout: float
) -> dict:
    """The SDK's last tools/call again (or a first one), by plain HTTP with `token`."""
    if wire.last_call is not None:
        headers, body = wire.last_call
    elif wire.last_headers is not None:
        params = {"name": tool or default_tool, "arguments": {}}
        headers, body = wire.last_headers, {"jsonrpc": "2.0", "method": "tools/call", "params": params}
    else:
        return {"raw": None, "error": "the SDK sent nothing yet"}
    headers = dict(headers)
    body = dict(body, id=f"raw-{n}")
    if tool is not None:
        body["params"] = dict(body.get("params") or {}, name=tool)
        for k in list(headers):
            if k.lower() == "mcp-name":
                headers[k] = tool
    if token:
        headers["authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=timeout) as http:
        resp = await http.post(wire.url, json=body, headers=headers)
    text = resp.text
    parsed: object = text
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        data = [l[5:].strip() for l in text.splitlines() if l.startswith("data:")]
        text = data[-1] if data else ""
    try:
        parsed = json.loads(text)
    except ValueError:
        pass
    return {
        "raw": resp.status_code,
        "retry_after": resp.headers.get("retry-after"),
        "www_authenticate": resp.headers.get("www-authenticate"),
        "body": parsed,
    }


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--mode", default="legacy")
    p.add_argument("--tool", default="whoami")
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--login-hint", default=None)
    p.add_argument("--list", action="store_true")
    p.add_argument("--interactive", action="store_true")
    a = p.parse_args()

    browser = Browser(a.timeout, origin_of(a.url), a.login_hint)
    storage = MemoryStorage()
    wire = Wire(a.url)
    auth = OAuthClientProvider(
        server_url=a.url,
        client_metadata=OAuthClientMetadata(
            client_name="vmcp-login-test",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )
    calls = errors = 0
    hooks = {"request": [wire.on_request], "response": [wire.on_response]}

    def token() -> str | None:
        return storage.tokens.access_token if storage.tokens else None

    async with httpx2.AsyncClient(
        auth=auth, timeout=httpx2.Timeout(a.timeout, read=a.timeout), event_hooks=hooks
    ) as http:
        transport = streamable_http_client(a.url, http_client=http)
        async with Client(transport, mode=a.mode, cache=None, read_timeout_seconds=a.timeout) as client:

            async def one(tool: str | None = None) -> None:
                nonlocal calls, errors
                calls += 1
                n = calls
                sent = time.time()
                text, error = None, None
                try:
                    result = await client.call_tool(tool or a.tool, {})
                    text = "".join(c.text for c in result.content if getattr(c, "type", None) == "text")
                    if result.is_error:
                        error = text
                except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
                    error = f"{type(e).__name__}: {e}"
                if error is not None:
                    errors += 1
                print(json.dumps({"call": n, "sent": sent, "done": time.time(), "text": text, "error": error}), flush=True)

            async def names() -> list[str]:
                listed = await client.list_tools(cache_mode="refresh")
                return [t.name for t in listed.tools]

            if a.list:
                print(json.dumps({"tools": await names()}), flush=True)

            raws = 0
            while a.interactive:
                line = await anyio.to_thread.run_sync(sys.stdin.readline)
                if not line:
                    break
                if not line.split():
                    continue
                cmd, *rest = line.split()
                arg = rest[0] if rest else None
                if cmd == "quit":
                    break
                if cmd == "call":
                    await one(arg)
                elif cmd == "list":
                    print(json.dumps({"tools": await names()}), flush=True)
                elif cmd == "raw":
                    raws += 1
                    print(json.dumps(await raw_call(wire, token(), arg, a.tool, raws, a.timeout)), flush=True)
                elif cmd == "loglevel":
                    level, error = arg or "debug", None
                    try:
                        await client.set_logging_level(level)
                    except Exception as e:  # noqa: BLE001 - reported, not raised
                        error = f"{type(e).__name__}: {e}"
                    print(json.dumps({"loglevel": level, "error": error}), flush=True)
                elif cmd == "state":
                    state = {"logins": browser.logins, "token": fingerprint(token()), "statuses": wire.statuses}
                    print(json.dumps({"state": True, **state}), flush=True)
                else:
                    print(json.dumps({"unknown": cmd}), flush=True)

            start = time.monotonic()
            while not a.interactive:
                async with anyio.create_task_group() as tg:
                    for _ in range(a.concurrency):
                        tg.start_soon(one)
                if time.monotonic() - start >= a.seconds:
                    break
                await anyio.sleep(a.interval)
    summary = {
        "summary": True,
        "logins": browser.logins,
        "calls": calls,
        "errors": errors,
        "statuses": wire.statuses,
        "token": fingerprint(token()),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
