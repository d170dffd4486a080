"""Log masking when the client percent-encodes a reader's link or an address.

Werkzeug decodes a path once before routing it, so ``/%63onfirm/<token>`` or
``/confirm%2F<token>`` reaches the same page as ``/confirm/<token>``; the access log line
(gunicorn's request line is the raw one) must lose the token all the same.
"""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.serving import make_server
from werkzeug.urls import uri_to_iri

from course.app import create_app
from course.logs import TOKEN_PATHS, mask, mask_record
from tests.conftest import make_config, outbox_messages
from tests.helpers import link, local_path
from tests.test_links import tick

TOKEN = "WzEsMl0.Zq3-_x"


def _spellings(path: str) -> Iterator[str]:
    """``path`` with each one of its characters percent-encoded (upper and lower hex), and
    with all of them."""
    for i, char in enumerate(path):
        code = f"{ord(char):02X}"
        for hexdigits in {code, code.lower()}:
            yield f"{path[:i]}%{hexdigits}{path[i + 1 :]}"
    yield "".join(f"%{ord(char):02x}" for char in path)


#: Every token path, with each character (the slashes too) encoded in turn.
SPELLINGS = sorted({s for name in TOKEN_PATHS for s in _spellings(f"/{name}/")})


@pytest.mark.parametrize("prefix", SPELLINGS)
def test_every_spelling_of_a_token_path_is_masked(prefix: str) -> None:
    # Each spelling is one that Werkzeug decodes (and so routes) as the plain path.
    assert unquote(prefix).strip("/") in TOKEN_PATHS
    line = f'"GET {prefix}{TOKEN} HTTP/1.1" 200 -'
    assert mask(line) == f'"GET {prefix}[token] HTTP/1.1" 200 -'
    # The same line as werkzeug's own log writes it (decoded, but "%2F" kept).
    assert TOKEN not in mask(uri_to_iri(line))


@st.composite
def spelled(draw: st.DrawFn) -> str:
    """A token path with any mix of its characters encoded, in either case of hex."""
    name = draw(st.sampled_from(TOKEN_PATHS))
    out = []
    for char in f"/{name}/":
        how = draw(st.sampled_from(["plain", "upper", "lower"]))
        code = f"{ord(char):02X}"
        out.append(char if how == "plain" else f"%{code if how == 'upper' else code.lower()}")
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(prefix=spelled(), suffix=st.sampled_from(["", "/pause", "%2Fdata.json", "?utm=1"]))
def test_any_mix_of_encoded_characters_is_masked(prefix: str, suffix: str) -> None:
    line = f"GET {prefix}{TOKEN}{suffix} HTTP/1.1"
    assert mask(line) == f"GET {prefix}[token]{suffix} HTTP/1.1"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # The reports: a letter or the slash encoded, upper or lower hex.
        (f"GET /%63onfirm/{TOKEN} HTTP/1.1", "GET /%63onfirm/[token] HTTP/1.1"),
        (f"GET /confirm%2F{TOKEN} HTTP/1.1", "GET /confirm%2F[token] HTTP/1.1"),
        (f"GET /confirm%2f{TOKEN} HTTP/1.1", "GET /confirm%2f[token] HTTP/1.1"),
        (f"POST /%6De/{TOKEN}/pause HTTP/1.1", "POST /%6De/[token]/pause HTTP/1.1"),
        (f"POST /%6de%2F{TOKEN}%2fpause HTTP/1.1", "POST /%6de%2F[token]%2fpause HTTP/1.1"),
        (f"GET %2Fview%2F{TOKEN} HTTP/1.1", "GET %2Fview%2F[token] HTTP/1.1"),
        # Every character encoded.
        (
            f"GET /%75%6E%73%75%62%73%63%72%69%62%65%2F{TOKEN}",
            "GET /%75%6E%73%75%62%73%63%72%69%62%65%2F[token]",
        ),
        # Characters of the token encoded: still one token.
        ("GET /book/WzE%73Ml0.x%2Dy HTTP/1.1", "GET /book/[token] HTTP/1.1"),
        ("GET /done/t%C3%BCk HTTP/1.1", "GET /done/[token] HTTP/1.1"),
        # An encoded "?", "#", space or quote is part of the path for Werkzeug, so of the
        # token; a literal one ends it.
        (f"GET /confirm/%3F{TOKEN}?utm=1 HTTP/1.1", "GET /confirm/[token]?utm=1 HTTP/1.1"),
        (f"GET /confirm/{TOKEN}%20x%23y%22 HTTP/1.1", "GET /confirm/[token] HTTP/1.1"),
        (f"GET /confirm/{TOKEN}%C2%A0x HTTP/1.1", "GET /confirm/[token] HTTP/1.1"),
        # An encoded slash ends the token, as it does for the router ("/confirm/a/b" is a
        # 404; "/me/<token>%2Fdata.json" is the data page).
        (f"GET /confirm/{TOKEN}%2Fdef HTTP/1.1", "GET /confirm/[token]%2Fdef HTTP/1.1"),
        (f"GET /me/{TOKEN}%2Fdata.json HTTP/1.1", "GET /me/[token]%2Fdata.json HTTP/1.1"),
        # Repeated slashes are merged by the router (a redirect to the plain path).
        (f"GET //confirm/{TOKEN} HTTP/1.1", "GET //confirm/[token] HTTP/1.1"),
        (f"GET /confirm//{TOKEN} HTTP/1.1", "GET /confirm//[token] HTTP/1.1"),
        (f"GET ///me///{TOKEN}//pause HTTP/1.1", "GET ///me///[token]//pause HTTP/1.1"),
        (f"GET /confirm%2F%2f{TOKEN} HTTP/1.1", "GET /confirm%2F%2f[token] HTTP/1.1"),
        # ";params" are part of the token for Werkzeug.
        (f"GET /confirm/{TOKEN};x=1 HTTP/1.1", "GET /confirm/[token] HTTP/1.1"),
        # Routing is case-sensitive, so these are 404s; masking them is harmless.
        (f"GET /CONFIRM/{TOKEN} HTTP/1.1", "GET /CONFIRM/[token] HTTP/1.1"),
        (f"GET /%43onfirm/{TOKEN} HTTP/1.1", "GET /%43onfirm/[token] HTTP/1.1"),
        # An absolute request target, a link inside a query string.
        (
            f"GET http://course.example.org/%63onfirm/{TOKEN} HTTP/1.1",
            "GET http://course.example.org/%63onfirm/[token] HTTP/1.1",
        ),
        (f"GET /?next=%2Fme%2F{TOKEN} HTTP/1.1", "GET /?next=%2Fme%2F[token] HTTP/1.1"),
        # Not a token path, or not encoded correctly: unchanged.
        ("GET /static/%63onfirm.css HTTP/1.1", "GET /static/%63onfirm.css HTTP/1.1"),
        ("GET /confirmation/x HTTP/1.1", "GET /confirmation/x HTTP/1.1"),
        ("GET /%63onfirm HTTP/1.1", "GET /%63onfirm HTTP/1.1"),
        ("GET /?q=%2Fconfirm HTTP/1.1", "GET /?q=%2Fconfirm HTTP/1.1"),
        ("GET /%6/confirm%2 100% %zz %", "GET /%6/confirm%2 100% %zz %"),
        ("GET /%%63onfirm%2%46x", "GET /%%63onfirm%2%46x"),
    ],
)
def test_mask_encoded_link_paths(line: str, expected: str) -> None:
    assert mask(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("?email=ana%40example.com", "?email=a***%40example.com"),
        ("?email=ana.lopez%40Example.COM", "?email=a***%40Example.COM"),
        ("?email=ana%2Elopez%40example.com", "?email=a***%40example.com"),
        ("?email=ana%2elopez%40example.com", "?email=a***%40example.com"),
        ("?email=ana%2Blopez%40example.com", "?email=a***%40example.com"),
        ("?email=%61na%40example.com", "?email=%61***%40example.com"),
        ("?email=ANA%40EXAMPLE.COM", "?email=A***%40EXAMPLE.COM"),
        # The domain encoded, in part or in whole.
        ("?email=ana%40example%2Ecom", "?email=a***%40example%2Ecom"),
        ("?email=ana%40%65xample.com", "?email=a***%40%65xample.com"),
        ("?email=ana@example%2ecom", "?email=a***@example%2ecom"),
        (
            "?e=%61%6E%61%40%65%78%61%6D%70%6C%65%2E%63%6F%6D&x=1",
            "?e=%61***%40%65%78%61%6D%70%6C%65%2E%63%6F%6D&x=1",
        ),
        # UTF-8, as a browser encodes a form.
        ("?email=j%C3%BCrgen%40m%C3%BCller.de", "?email=j***%40m%C3%BCller.de"),
        # Inside a link path (encoded slash before the local part).
        ("GET /?next=%2Fana%40example.com", "GET /?next=%***%40example.com"),
        # An encoded "=" or space before the "@" is walked over, as it was before.
        ("?to=x%3Dana%40example.com", "?to=x***%40example.com"),
        ("to ana%20@example.com", "to a***@example.com"),
        # Not an address.
        ("100%40 done", "100%40 done"),
        ("%40example.com", "%40example.com"),
    ],
)
def test_mask_encoded_addresses(line: str, expected: str) -> None:
    assert mask(line) == expected


@pytest.mark.parametrize(
    "hostile",
    [
        "%" * 100_000,
        "%63" * 34_000,
        "%2F" * 34_000,
        "%C3" * 34_000,  # UTF-8 lead bytes without continuation
        "%F0%9F%98" * 11_000,  # a 4-byte sequence cut short, again and again
        "/confirm" + "/" * 100_000,
        "/confirm" + "%2F" * 34_000,
        "/%63onfirm%2F" * 8_000,
        "/me/" * 25_000,
        "/confirm/" + "x" * 100_000,
        "/confirm/" + "%2" * 50_000,
        "@" * 100_000,
        "%40" * 34_000,
        "@" + "a." * 50_000,
        "%40" + "a%2E" * 25_000,
        "a" * 100_000 + "@example.com",
        "a%2E" * 25_000 + "%40example.com",
        "a%40" * 25_000,
        "a@b." * 25_000,
        "%61@%62." * 12_000,
        "[parameters: " + "x" * 100_000,
    ],
    ids=lambda s: f"{s[:12]}...",
)
def test_a_hostile_line_is_masked_in_linear_time(hostile: str) -> None:
    """Each is about 100 KB; a quadratic or backtracking scan would not finish."""
    line = f'203.0.113.9 - - "GET {hostile} HTTP/1.1" 404 -'
    assert mask(line).startswith('203.0.113.9 - - "GET ')


def _werkzeug_record(request_line: str) -> logging.LogRecord:
    """A record as Werkzeug's development server creates it for a request."""
    return logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '127.0.0.1 - - [26/Nov/2026 02:30:11] "%s" %s %s',
        (request_line, "200", "-"),
        None,
    )


def _gunicorn_record(request_line: str) -> logging.LogRecord:
    """A record as gunicorn creates it with its default ``access_log_format``."""
    atoms = {
        "h": "203.0.113.9",
        "l": "-",
        "u": "-",
        "t": "[26/Nov/2026:02:30:11 +0000]",
        "r": request_line,
        "s": "200",
        "b": "123",
        "f": "-",
        "a": "Mozilla/5.0",
    }
    fmt = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
    return logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, fmt, (atoms,), None)


@pytest.mark.parametrize(
    "path", [f"/%63onfirm/{TOKEN}", f"/confirm%2F{TOKEN}", f"/%6De/{TOKEN}/pause"]
)
def test_access_log_records_are_masked(path: str) -> None:
    masked = path.replace(TOKEN, "[token]")
    record = _werkzeug_record(f"GET {path} HTTP/1.1")
    mask_record(record)
    assert record.getMessage() == (
        f'127.0.0.1 - - [26/Nov/2026 02:30:11] "GET {masked} HTTP/1.1" 200 -'
    )
    record = _gunicorn_record(f"GET {path} HTTP/1.1")
    mask_record(record)
    assert record.getMessage() == (
        f'203.0.113.9 - - [26/Nov/2026:02:30:11 +0000] "GET {masked} HTTP/1.1" 200 123 "-"'
        ' "Mozilla/5.0"'
    )


def _get(port: int, path: str, method: str = "GET") -> int:
    """The status of a request for ``path`` exactly as written (no client normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_encoded_reader_links_are_served_and_masked_in_the_access_log(
    tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app: Flask = create_app(make_config(tmp_path, sqlite_url))  # installs the masking
    settings = app.extensions["course"].settings
    app.test_client().post("/subscribe", json={"email": "ana@example.com", "name": "Ana"})
    tick(app)
    confirm = local_path(link(outbox_messages(settings)[-1], "confirm"))
    confirm_token = confirm.rsplit("/", 1)[1]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.INFO):
            assert _get(server.server_port, f"/%63onfirm/{confirm_token}") == 200
            # The page's button (a GET alone confirms nothing).
            assert _get(server.server_port, f"/%63onfirm/{confirm_token}", "POST") == 200
            tick(app)  # the confirmation worked: lesson 1 goes out, with its links
            me_token = link(outbox_messages(settings)[-1], "me").rsplit("/", 1)[1]
            assert _get(server.server_port, f"/%6De%2F{me_token}") == 200
            assert _get(server.server_port, f"/me%2f{me_token}%2Fdata.json") == 200
            # A doubled slash is a bad link (no redirect to another route), and still masked.
            assert _get(server.server_port, f"/%6De//{me_token}") == 404
            # What gunicorn would log for the same request: the raw request line.
            logging.getLogger("gunicorn.access").info(
                '%(h)s "%(r)s" %(s)s %(b)s',
                {"h": "203.0.113.9", "r": f"GET /%6De%2F{me_token} HTTP/1.1", "s": 200, "b": 9},
            )
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
    access = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert len(access) == 5, access
    assert all("[token]" in line for line in access), access
    assert '"GET /%6De%2F[token] HTTP/1.1" 200 9' in caplog.text
    assert confirm_token not in caplog.text and me_token not in caplog.text
