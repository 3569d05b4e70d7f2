"""HTTP from reassembled streams: pairing, pipelining, bodies, decoding, and hostile input."""

from __future__ import annotations

import gzip
import time
import zlib

from _protobuild import Conv, ingest, write

from forensics.protocols import http


def _http(case, tmp_path, req: bytes, resp: bytes, **kw):  # type: ignore[no-untyped-def]
    c = Conv(**kw).send(True, req).send(False, resp).close()
    ingest(case, write(tmp_path / "h.pcap", c))
    return case.sql("SELECT * FROM http ORDER BY trans_depth")


def test_pipelined_requests_pair_in_order(case, tmp_path):
    req = (
        b"GET /a?x=%41%2f HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: t/1\r\n"
        b"Authorization: Basic dXNlcjpzM2NyZXQ=\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n"
        b"HEAD /b HTTP/1.1\r\nHost: example.com\r\n\r\n"
        b"POST /c HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello"
    )
    resp = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nabc"
        b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"  # HEAD: no body despite the length
        b"HTTP/1.1 201\r\nContent-Length: 0\r\n\r\n"
    )
    df = _http(case, tmp_path, req, resp)
    assert df["method"].tolist() == ["GET", "HEAD", "POST"]
    assert df["uri"][0] == "/a?x=A/"  # %XX decoded as Zeek shows it
    assert df["host"][0] == "example.com"  # without the port, as Zeek
    assert df["status_code"].tolist() == [200, 200, 201]
    assert df["status_msg"][2] == "<empty>"
    assert df["request_body_len"].tolist() == [0, 0, 5]
    assert df["response_body_len"].tolist() == [3, 0, 0]
    assert (df["username"][0], df["password"][0]) == ("user", "s3cret")
    assert list(df["proxied"][0]) == ["X-FORWARDED-FOR -> 10.9.9.9"]
    assert case.sql("SELECT service FROM sessions WHERE proto = 'tcp'")["service"][0] == "http"


def test_chunked_gzip_body_and_100_continue(case, tmp_path):
    body = b"<html><body>" + b"x" * 5000 + b"</body></html>"
    gz = gzip.compress(body)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(gz[i : i + 700]), gz[i : i + 700]) for i in range(0, len(gz), 700)
    )
    req = b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    c = Conv().send(True, req).send(False, b"HTTP/1.1 100 Continue\r\n\r\n").send(True, b"data")
    c.send(
        False,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n"
        b"Content-Type: text/html\r\n\r\n" + chunks + b"0\r\nX-Trailer: 1\r\n\r\n",
    ).close()
    ingest(case, write(tmp_path / "g.pcap", c))
    (row,) = case.sql("SELECT * FROM http").to_dict("records")
    assert (row["info_code"], row["info_msg"], row["status_code"]) == (100, "Continue", 200)
    assert row["request_body_len"] == 4
    assert row["response_body_len"] == len(body)
    assert list(row["resp_mime_types"]) == ["text/html"]
    b = case.sql("SELECT * FROM http_bodies WHERE NOT is_orig").to_dict("records")[0]
    assert b["wire_len"] == len(gz) and b["body_len"] == len(body) and b["decoded"] and not b["truncated"]
    assert b["transfer_encoding"] == "chunked"


def test_raw_deflate_without_zlib_header(case, tmp_path):
    body = b"var x = 1;" * 300
    co = zlib.compressobj(wbits=-15)
    raw = co.compress(body) + co.flush()
    df = _http(
        case,
        tmp_path,
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s" % (len(raw), raw),
    )
    assert df["response_body_len"][0] == len(body)


def test_decompression_bomb_is_capped(case, tmp_path, monkeypatch):
    monkeypatch.setattr(http, "DECODE_CAP", 1 << 20)
    bomb = gzip.compress(b"\0" * (50 << 20))  # 50 MiB of zeros in ~50 KB
    t = time.perf_counter()
    df = _http(
        case,
        tmp_path,
        b"GET /bomb HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(bomb), bomb),
    )
    assert time.perf_counter() - t < 30
    assert (1 << 20) < df["response_body_len"][0] <= (1 << 20) + (1 << 20)
    assert bool(case.sql("SELECT truncated FROM http_bodies")["truncated"][0])
    assert "http_decompression_cap" in set(case.warnings()["code"])


def test_malformed_messages_warn_and_continue(case, tmp_path):
    req = (
        b"GET /ok HTTP/1.1\r\nHost: h\r\nbroken header line\r\n\r\n"
        b"POST /neg HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n"
        b"\x00\x01garbage that is not a request\r\n\r\n"
        b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nbad chunk\r\n0\r\n\r\n"
    df = _http(case, tmp_path, req, resp)
    assert df["uri"].tolist() == ["/ok", "/neg", "/after"]
    codes = set(case.warnings()["code"])
    assert {"http_bad_header", "http_bad_content_length", "http_bad_start_line", "http_bad_chunk"} <= codes


def test_absurd_header_is_bounded(case, tmp_path):
    huge = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"A" * (http.MAX_HEADER + 10_000)
    c = Conv().send(True, huge).close()
    ingest(case, write(tmp_path / "b.pcap", c))
    assert "http_header_too_large" in set(case.warnings()["code"])


def test_huge_content_length_past_the_stream(case, tmp_path):
    df = _http(
        case,
        tmp_path,
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\nshort body",
    )
    assert df["response_body_len"][0] == len(b"short body")


def test_detected_by_content_on_any_port(case, tmp_path):
    df = _http(case, tmp_path, b"GET /x HTTP/1.0\r\n\r\n", b"HTTP/1.0 404 Not Found\r\n\r\n", sport=31337)
    assert df["status_code"][0] == 404
    assert case.sql("SELECT service FROM sessions WHERE proto='tcp'")["service"][0] == "http"
