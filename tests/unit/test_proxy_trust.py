"""Proxy headers: the one family --forwarded-headers names is read, the other never overrides it,
and the client is the first untrusted hop from the right (wsgi.forwarded_client)."""

import pytest

from fastcluster import config as _config
from fastcluster import wsgi
from fastcluster.cli import build_parser
from fastcluster.config import Config
from fastcluster.errors import ConfigError

XFF, XFP, FWD = "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_FORWARDED"
LOCAL = "127.0.0.1,::1"

# what a client may add of the family its proxy does not set
HOSTILE_X = [{XFF: "6.6.6.6"}, {XFP: "https"}, {XFF: "6.6.6.6", XFP: "https"}, {XFF: "unknown", XFP: "http"}]
HOSTILE_RFC = [{FWD: "for=6.6.6.6;proto=https"}, {FWD: 'for="[2001:db8::6]:1";proto=https'},
               {FWD: "for=unknown;proto=https"}, {FWD: "proto=https"}, {FWD: "for=127.0.0.1;proto=https"}]


def seen(env, spec=LOCAL, family=wsgi.X_FORWARDED):
    return wsgi.forwarded_client(env, wsgi.Trust(spec, family))


def test_the_default_family_is_x_forwarded_and_the_config_agrees():
    assert wsgi.Trust(LOCAL).family == wsgi.X_FORWARDED
    assert Config().forwarded_headers == wsgi.X_FORWARDED
    # config.py keeps its own copy so that the master need not import wsgi
    assert _config.FORWARDED_FAMILIES == wsgi.FORWARDED_FAMILIES
    with pytest.raises(ValueError):
        wsgi.Trust(LOCAL, "both")


@pytest.mark.parametrize("argv, environ, expected", [
    (["--forwarded-headers", "Forwarded"], {}, "forwarded"),
    ([], {"FASTCLUSTER_FORWARDED_HEADERS": "none"}, "none"),
    ([], {}, "x-forwarded"),
])
def test_the_option_reads_from_the_command_line_and_the_environment(argv, environ, expected):
    args = build_parser().parse_args(["serve", "app:app", *argv])
    assert Config.from_args(args, environ).forwarded_headers == expected


def test_an_unknown_family_is_refused():
    args = build_parser().parse_args(["serve", "app:app"])
    with pytest.raises(ConfigError, match="FASTCLUSTER_FORWARDED_HEADERS='both'"):
        Config.from_args(args, {"FASTCLUSTER_FORWARDED_HEADERS": "both"})


def test_x_forwarded_behind_nginx_ignores_a_clients_forwarded():
    """The issue's case: nginx sets X-Forwarded-*, the client adds Forwarded."""
    proxied = {XFF: "1.2.3.4", XFP: "http"}
    for hostile in HOSTILE_RFC:
        assert seen({**proxied, **hostile}) == ("1.2.3.4", "0", "http"), hostile
        # a proxy that sets nothing (a health checker on the host): the peer stays the client
        assert seen(hostile) == (None, None, None), hostile


def test_forwarded_behind_its_proxy_ignores_a_clients_x_forwarded():
    proxied = {FWD: "for=1.2.3.4;proto=http"}
    for hostile in HOSTILE_X:
        assert seen({**proxied, **hostile}, family=wsgi.FORWARDED) == ("1.2.3.4", "0", "http"), hostile
        assert seen(hostile, family=wsgi.FORWARDED) == (None, None, None), hostile


def test_none_reads_neither_family():
    for hostile in HOSTILE_X + HOSTILE_RFC:
        assert seen({XFF: "1.2.3.4", XFP: "https", FWD: "for=1.2.3.4;proto=https", **hostile},
                    family=wsgi.NO_FORWARDED) == (None, None, None)


@pytest.mark.parametrize("xff, client", [
    ("6.6.6.6, 1.2.3.4", "1.2.3.4"),                 # what the client wrote is left of its address
    ("6.6.6.6, 10.0.0.9, 1.2.3.4", "1.2.3.4"),       # even when it names a trusted proxy
    ("6.6.6.6, 1.2.3.4, 10.0.0.7, 10.0.0.8", "1.2.3.4"),   # a chain of trusted proxies is walked
    ("10.0.0.5, 10.0.0.7", "10.0.0.5"),              # all trusted: the farthest
    ("6.6.6.6, unknown, 10.0.0.7", None),            # a hop it cannot account for ends the walk
    ("1.2.3.4:5678", "1.2.3.4"),
])
def test_x_forwarded_for_is_walked_from_the_right(xff, client):
    addr, _port, _scheme = seen({XFF: xff}, "127.0.0.1,10.0.0.0/8")
    assert addr == client


def test_x_forwarded_proto_is_the_nearest_proxys():
    assert seen({XFP: "https, http"})[2] == "http"
    assert seen({XFP: "HTTPS"})[2] == "https"
    assert seen({XFP: "gopher"})[2] is None


@pytest.mark.parametrize("header, expected", [
    # the proto of the client's own element, not the last one given
    ("for=6.6.6.6;proto=https, for=1.2.3.4", ("1.2.3.4", "0", None)),
    ("for=1.2.3.4;proto=https, for=10.0.0.3;proto=http", ("1.2.3.4", "0", "https")),
    ('for=6.6.6.6;proto=http, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.3',
     ("2001:db8:cafe::17", "4711", "https")),
    ("for=unknown;proto=https, for=10.0.0.3", (None, None, "https")),   # the trusted proxy's word
    ("for=unknown;proto=https, for=1.2.3.4;proto=http", ("1.2.3.4", "0", "http")),
    ("proto=https", (None, None, "https")),
    ("For=10.0.0.5;Proto=HTTPS", ("10.0.0.5", "0", "https")),
])
def test_forwarded_pairs_the_scheme_with_the_client_hop(header, expected):
    assert seen({FWD: header}, "127.0.0.1,10.0.0.0/8", wsgi.FORWARDED) == expected
