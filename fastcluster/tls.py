"""TLS (--certfile and friends): the server's context, and one connection's session.

The master builds the context (so a bad certificate, key or password is a one-line error before
anything is forked, and a key readable only by root works with --user); the workers inherit it
through the fork, and SIGHUP builds it again (a renewed certificate is taken by the restarted
workers). TLS 1.2 is the minimum version; renegotiation is off.

A connection's `Session` is Python's `ssl.SSLObject` over two `MemoryBIO`s: the loop reads and
writes the socket itself (epoll, non-blocking) and moves ciphertext in and out of the session, so
the handshake is just more reading and writing on the loop, under --header-timeout like a slow
request head. Both loops' `TlsConnection` (`_parser_py.py`, `_connection.pxi`) drive it.
"""

from __future__ import annotations

import logging
import ssl

from . import board as _board
from .errors import ConfigError

log = logging.getLogger("fastcluster")

READ_SIZE = 65536         # plaintext asked for per SSLObject.read()
SEAL_SIZE = 65536         # plaintext encrypted at a time (bounds the ciphertext waiting to be sent)

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}

SSLError = ssl.SSLError
WantRead = ssl.SSLWantReadError


def make_context(config):
    """The server's SSLContext for `config`, or None without --certfile; ConfigError when the files
    cannot be used."""
    if not config.certfile:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    password = config.keyfile_password
    try:
        context.load_cert_chain(config.certfile, config.keyfile, password if password is not None else _no_password)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError) and password is not None and (exc.reason in (None, "PEM_LIB", "BAD_DECRYPT")):
            raise ConfigError("cannot load the key %s: wrong --keyfile-password, or not a PEM key"
                              % (config.keyfile or config.certfile)) from None
        if isinstance(exc, ssl.SSLError):
            raise ConfigError("--certfile %s%s: %s" % (
                config.certfile, " --keyfile %s" % config.keyfile if config.keyfile else "", _reason(exc))) from None
        raise ConfigError("cannot read %s: %s" % (exc.filename or config.certfile, exc.strerror or exc)) from None
    except _PasswordNeeded:
        raise ConfigError("the key in %s is encrypted: give --keyfile-password"
                          % (config.keyfile or config.certfile)) from None
    if config.ca_certs:
        try:
            context.load_verify_locations(cafile=config.ca_certs)
        except OSError as exc:
            raise ConfigError("--ca-certs %s: %s" % (config.ca_certs, _reason(exc))) from None
        context.verify_mode = _CERT_REQS[config.cert_reqs]
    if config.ssl_ciphers:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise ConfigError("--ssl-ciphers %r: OpenSSL knows no cipher in it" % config.ssl_ciphers) from None
    # ALPN: what the client may choose (--http); a client that offers none of them gets HTTP/1.1
    # on --http auto, and the handshake's no_application_protocol alert on --http 2
    context.set_alpn_protocols({"1": ["http/1.1"], "2": ["h2"]}.get(config.http, ["h2", "http/1.1"]))
    return context


class _PasswordNeeded(Exception):
    pass


def _no_password():
    raise _PasswordNeeded()


def _reason(exc) -> str:
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        return {"PEM_LIB": "not a PEM certificate or key", "KEY_VALUES_MISMATCH": "the key does not match "
                "the certificate", "BAD_DECRYPT": "wrong --keyfile-password", "NO_START_LINE": "not a PEM "
                "file"}.get(reason, reason.lower().replace("_", " "))
    return exc.strerror or str(exc)


def describe(exc) -> str:
    """A failed handshake, for the log line."""
    reason = getattr(exc, "reason", None)
    if reason == "HTTP_REQUEST":
        return "a plain-HTTP request on the TLS port"
    if reason:
        return reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__


def refused(server, env, exc):
    """A connection whose handshake failed (or whose records are corrupt): counted as a refused
    request and logged, once; the caller closes it."""
    server.cells[_board.refusal_cell(400)] += 1
    log.info("closed a TLS connection from %s: %s", env.get("REMOTE_ADDR") or "a unix socket", describe(exc))


class Session:
    """One connection's TLS state: ciphertext in (`receive`), ciphertext out (`seal`, `pending`)."""

    __slots__ = ("obj", "incoming", "outgoing", "ready")

    def __init__(self, context):
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.ready = False      # the handshake is done

    def receive(self, data):
        """Ciphertext from the client; returns (the plaintext it completes, whether the client has
        closed its side with close_notify). Raises ssl.SSLError for a failed handshake or a
        corrupt record. Afterwards `pending()` may hold handshake bytes or session tickets to send."""
        self.incoming.write(data)
        obj = self.obj
        if not self.ready:
            try:
                obj.do_handshake()
            except WantRead:
                return b"", False
            self.ready = True
        chunks = []
        incoming = self.incoming
        try:
            while True:
                chunk = obj.read(READ_SIZE)
                if not chunk:
                    return b"".join(chunks), True
                chunks.append(chunk)
                if not incoming.pending and not obj.pending():
                    break        # all of it decrypted: no read that can only raise WantRead
        except WantRead:
            pass
        except ssl.SSLZeroReturnError:
            return b"".join(chunks), True
        if not chunks:
            return b"", False
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), False

    def seal(self, data):
        """Encrypt plaintext; the ciphertext waits in `pending()`."""
        self.obj.write(data)

    def pending(self) -> bytes:
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        """Our side's close_notify alert (b"" before the handshake is done)."""
        if self.ready:
            try:
                self.obj.unwrap()
            except (ssl.SSLError, ValueError, OSError):
                pass     # (it waits for the client's alert; we do not)
        return self.outgoing.read()
