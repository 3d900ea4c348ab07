#!/usr/bin/env python3
"""Writes the seed corpora under tests/fuzz/corpus/ (committed; rerun after a
protocol change). Tokens are signed with the fuzz config's secret
(tests/fuzz/fuzz_hub.h) and carry no exp, or an exp relative to the harness's
fixed clock (1.8e9), so seeds keep connecting whenever they run.
    python3 tests/fuzz/make_seeds.py"""
import hashlib
import json
import os
import struct
import sys

import jwt  # python3-jwt
from google.protobuf.internal.encoder import _VarintBytes  # python3-protobuf

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "fuzz-secret-0123456789"
NOW = 1_800_000_000


def tok(claims):
    return jwt.encode(claims, SECRET, algorithm="HS256")


def records(*recs):
    out = b""
    for kind, payload in recs:
        if isinstance(payload, str):
            payload = payload.encode()
        out += struct.pack("<BH", kind, len(payload)) + payload
    return out


def write(name, seeds):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    for i, data in enumerate(seeds):
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, "seed-%02d-%s" % (i, hashlib.sha1(data).hexdigest()[:10])), "wb") as f:
            f.write(data)


def pb_command(fields):
    """A Centrifugo protobuf Command, hand-encoded: id (1), connect (4),
    ping (11), refresh (14) with token (1), name (4), version (5)."""
    def ld(num, payload):
        return _VarintBytes((num << 3) | 2) + _VarintBytes(len(payload)) + payload
    out = b""
    if "id" in fields:
        out += _VarintBytes(1 << 3) + _VarintBytes(fields["id"])
    if "connect" in fields:
        c = fields["connect"]
        inner = ld(1, c["token"].encode()) + ld(4, c.get("name", "pb").encode()) + ld(5, b"1.0")
        out += ld(4, inner)
    if "ping" in fields:
        out += ld(11, b"")
    if "refresh" in fields:
        out += ld(14, ld(1, fields["refresh"].encode()))
    return out


def pb_frame(*commands):
    return b"".join(_VarintBytes(len(c)) + c for c in commands)


def main():
    plain = tok({"sub": "42", "info": {"name": "Ann"}, "meta": {"plan": "pro"}})
    short = tok({"sub": "42", "exp": NOW + 20})
    fresh = tok({"sub": "42", "exp": NOW + 3600})
    expired = tok({"sub": "42", "exp": NOW - 10})
    float_exp = tok({"sub": "7", "exp": NOW + 30.5, "nbf": NOW - 1.5, "iat": NOW - 2})
    strict = tok({"sub": "9", "aud": ["x", "chat"], "iss": "auth"})

    def connect(t, i=1):
        return json.dumps({"id": i, "connect": {"token": t, "name": "web", "version": "2.0"}})

    write("centrifuge_json", [
        records((0, connect(plain)), (0, '{}'), (0, '{"id":2,"ping":{}}')),
        records((0, connect(short)), (2, "x" * 15), (0, json.dumps({"id": 2, "refresh": {"token": fresh}})),
                (2, "x" * 40)),
        records((0, connect(expired)), (0, connect(fresh, 2)), (0, '{"id":3,"subscribe":{"channel":"c"}}')),
        records((0, connect(plain) + "\n" + '{"id":2,"ping":{}}' + "\n" + '{"id":3,"presence":{"channel":"c"}}')),
        records((3, "strict"), (0, connect(strict)), (0, json.dumps({"id": 2, "refresh": {"token": plain}}))),
        records((0, connect(float_exp)), (2, "x" * 30), (2, "x" * 30)),
        records((0, connect(plain)), (0, json.dumps({"id": 2, "refresh": {"token": tok({"sub": "43"})}}))),
        records((0, '{"id":1,"connect":{"token":"a.b.c"}}')),
        records((0, connect(plain)), (1, "\x00\x01")),
    ])
    write("centrifuge_protobuf", [
        records((0, pb_frame(pb_command({"id": 1, "connect": {"token": plain}}))), (0, b"\x00"),
                (0, pb_frame(pb_command({"id": 2, "ping": True})))),
        records((0, pb_frame(pb_command({"id": 1, "connect": {"token": short}}))), (2, "x" * 15),
                (0, pb_frame(pb_command({"id": 2, "refresh": fresh}))), (2, "x" * 40)),
        records((0, pb_frame(pb_command({"id": 1, "connect": {"token": expired}}),
                             pb_command({"id": 2, "connect": {"token": fresh}})))),
        records((0, pb_frame(pb_command({"id": 1, "connect": {"token": plain}}), pb_command({"id": 2, "ping": True}),
                             pb_command({"id": 3, "refresh": tok({"sub": "43"})})))),
        records((3, "strict"), (0, pb_frame(pb_command({"id": 1, "connect": {"token": strict}})))),
    ])
    user = json.dumps({"id": "42", "user_info": {"name": "Ann"}})
    write("pusher", [
        records((1, user), (0, '{"event":"pusher:ping","data":{}}')),
        records((1, user), (2, "x" * 30), (0, '{"event":"pusher:pong","data":"{}"}'), (1, user)),
        records((0, '{"event":"pusher:subscribe","data":{"channel":"private-x","auth":"a:b"}}'),
                (0, '{"event":"client-x","channel":"c","data":"{}"}'), (1, '{"id":""}')),
        records((0, '{"event":"pusher:signin","data":{"auth":"fuzz-key:00","user_data":"{\\"id\\":\\"1\\"}"}}')),
        records((3, "wrong-key"), (0, '{"event":"pusher:ping"}')),
        records((1, json.dumps({"id": "7", "watchlist": ["1", "2"]})), (0, '{"event":"pusher:unsubscribe"}')),
        records((1, user), (0, '{"event":"pusher:subscribe","data":{"channel":"#server-to-user-42"}}'),
                (2, '{"text":"hi"}'), (2, '"a string"'),
                (0, '{"event":"pusher:unsubscribe","data":{"channel":"#server-to-user-42"}}'), (2, "1")),
        records((0, '{"event":"pusher:subscribe","data":{"channel":"#server-to-user-42"}}'), (1, user),
                (0, '{"event":"pusher:subscribe","data":{"channel":"#server-to-user-43"}}'), (2, "not json")),
    ])
    write("uni_stream", [
        json.dumps({"token": plain, "name": "curl", "version": "8.0"}),
        json.dumps({"token": short}),
        json.dumps({"token": expired}),
        json.dumps({"token": float_exp, "name": "x", "data": {"a": [1, 2]}, "subs": {}}),
        '{"token":',
    ])
    write("jwt", [
        b"\x00" + plain.encode(), b"\x00" + expired.encode(), b"\x00" + strict.encode(),
        b"\x01" + json.dumps({"sub": "1", "exp": NOW + 1.25, "nbf": NOW, "iat": 1.7e9}).encode(),
        b"\x01" + json.dumps({"sub": "1", "aud": "chat", "iss": "auth", "meta": {"a": [1, {"b": None}]}}).encode(),
        b"\x01" + json.dumps({"sub": 5, "exp": "soon"}).encode(),
        b"\x00eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
    ])
    q = "auth_key=fuzz-key&auth_timestamp=%d&auth_version=1.0" % NOW
    md5_empty = hashlib.md5(b"").hexdigest()
    md5_body = hashlib.md5(b'{"code":4001}').hexdigest()
    write("pusher_rest", [
        b"\x01" + q.encode() + b"\n",
        b"\x01" + (q + "&body_md5=" + md5_body).encode() + b'\n{"code":4001}',
        b"\x01" + (q + "&body_md5=" + md5_empty + "&x=%41%2b+y").encode() + b"\n",
        b"\x00POST\n/apps/demo/users/42/terminate_connections\n" + (q + "&auth_signature=00").encode()
        + b"\n" + md5_empty.encode(),
        b"\x00GET\n/x\nauth_key=%zz&auth_key=a\n",
    ])
    write("config", [
        open(os.path.join(HERE, "..", "..", "config", "switchboard.yaml")).read(),
        "cluster: c\nnats_url: nats://x:1\napps:\n  - {id: a, key: k, secret: ${FUZZ_SECRET}, audience: chat}\n"
        "api_keys: [12345678]\ngateway: {port: 0, client_expired_close_delay_s: 0}\n",
        "cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: ${NOPE}}]\n",
        "apps: {id: a}\ngateway: [1, 2]\n",
        "{cluster: x, control: {addresses: [a:1, 'b:2'], listen: ':0'}}\n",
    ])
    # First byte: the read size the stream is cut into; then client frames.
    write("frame_scanner", [
        b"\x07" + b"\x81\x85\0\0\0\0hello" + b"\x89\x80\0\0\0\0",
        b"\x03" + b"\x82\xfe\x01\x00\0\0\0\0" + b"x" * 256,
        b"\x01" + b"\x81\x85\0\0\0\0hello" + b"\x81\x03abc",
        b"\x05" + b"\x89\xfe\x00\xc8\0\0\0\0" + b"p" * 200,
        b"\x3f" + b"\x02\xff" + bytes(6) + b"\x00\x10" + bytes(4) + b"y" * 16 + b"\x80\x80\0\0\0\0",
    ])
    # First byte unused; then a PROXY header (v1, v2 IPv4/IPv6/LOCAL) or an
    # X-Forwarded-For value.
    v2sig = b"\r\n\r\n\x00\r\nQUIT\n"
    write("proxy_header", [
        b"\x00PROXY TCP4 192.0.2.7 10.0.0.1 56324 8001\r\nGET / HTTP/1.1\r\n",
        b"\x00PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n",
        b"\x00PROXY UNKNOWN\r\n",
        b"\x00" + v2sig + b"\x21\x11\x00\x0c" + bytes([198, 51, 100, 9, 10, 0, 0, 1, 0x30, 0x39, 0x1f, 0x41]),
        b"\x00" + v2sig + b"\x21\x21\x00\x24" + bytes(36),
        b"\x00" + v2sig + b"\x20\x00\x00\x00",
        b"\x006.6.6.6, 198.51.100.4, 10.0.0.5",
        b"\x00[2001:db9::1]:443, 10.0.0.5",
    ])
    # First byte: the call (0 SendToUser, 1 SendToClient, 2 Pusher trigger,
    # 3 Pusher batch, 4 Centrifugo publish, 5 broadcast) + 8 for binary
    # protobuf; then the body as switchboard-http gets it.
    write("send_api", [
        b"\x00" + json.dumps({"app_id": "demo", "user_id": "42", "event": "hello", "data": {"a": [1, "x", None]},
                              "except_client_ids": ["c1"]}).encode(),
        b"\x00" + json.dumps({"app_id": "demo", "user_id": "42", "event": "e", "data": "x" * 3000}).encode(),
        b"\x01" + json.dumps({"app_id": "strict", "client_id": "c-1", "event": "e", "data": 1.5}).encode(),
        b"\x02" + json.dumps({"app_id": "demo", "name": "ev", "channels": ["#server-to-user-42", "#server-to-user-7"],
                              "data": '{"text":"hi"}', "socket_id": "123.456"}).encode(),
        b"\x02" + json.dumps({"app_id": "demo", "name": "ev", "channel": "private-x", "data": "plain"}).encode(),
        b"\x03" + json.dumps({"app_id": "demo", "batch": [{"channel": "#server-to-user-1", "name": "a", "data": "{}"},
                                                          {"channel": "#server-to-user-", "name": "b", "data": "1"}]}).encode(),
        b"\x04" + json.dumps({"channel": "#42", "data": {"n": 1}}).encode(),
        b"\x04" + json.dumps({"channel": "personal:#42", "data": [], "b64data": "AA=="}).encode(),
        b"\x05" + json.dumps({"channels": ["#1", "#2", "news"], "data": {"deep": [[[[{}]]]]}}).encode(),
        b"\x08" + bytes([0x0a, 0x04]) + b"demo" + bytes([0x12, 0x02]) + b"42" + bytes([0x1a, 0x01]) + b"e",
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
