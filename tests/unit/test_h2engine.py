"""The HTTP/2 engines (docs: the engine API the protocol layer drives), each driven by a client made
with the `h2` package, bytes moved between the two in memory. Every test runs on every engine this
build has: libnghttp2's (fastcluster._nghttp2, where its headers were there at build time) and the
pure-Python one (fastcluster.h2engine). What is asserted is what the client decoded, and the
calls the engine made on its handler."""

import logging

import pytest

import h2.config
import h2.connection
import h2.events
import h2.settings
from hpack import Decoder
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, RstStreamFrame, SettingsFrame

pytestmark = pytest.mark.timeout(30)


def _engines():
    params = []
    try:
        from fastcluster._nghttp2 import Engine
        params.append(pytest.param(Engine, id="nghttp2"))
    except ImportError:
        params.append(pytest.param(None, id="nghttp2", marks=pytest.mark.skip(
            reason="fastcluster._nghttp2 is not built (libnghttp2's headers were missing)")))
    try:
        from fastcluster.h2engine import H2Engine
        params.append(pytest.param(H2Engine, id="h2"))
    except ImportError:
        params.append(pytest.param(None, id="h2", marks=pytest.mark.skip(
            reason="fastcluster.h2engine is not in this tree")))
    return params


GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com"), (b":path", b"/")]
POST = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"example.com"), (b":path", b"/up")]


class Handler:
    """Records every call; `answer(engine, stream_id, headers, end_stream)`, when set, runs in h2_request."""

    def __init__(self):
        self.calls = []
        self.engine = None
        self.answer = None

    def h2_request(self, stream_id, headers, end_stream):
        self.calls.append(("request", stream_id, headers, end_stream))
        if self.answer is not None:
            self.answer(self.engine, stream_id, headers, end_stream)

    def h2_refused(self, stream_id, status):
        self.calls.append(("refused", stream_id, status))
        self.engine.respond(stream_id, status, [], True)        # as the protocol layer answers it

    def h2_data(self, stream_id, data):
        self.calls.append(("data", stream_id, data))

    def h2_end(self, stream_id):
        self.calls.append(("end", stream_id))

    def h2_reset(self, stream_id, error_code):
        self.calls.append(("reset", stream_id, error_code))

    def h2_closed(self, stream_id):
        self.calls.append(("closed", stream_id))

    def kinds(self, stream_id):
        return [call[0] for call in self.calls if call[1] == stream_id]

    def body(self, stream_id):
        return b"".join(call[2] for call in self.calls if call[0] == "data" and call[1] == stream_id)


def drain(engine):
    out = []
    while True:
        chunk = engine.pending()
        if not chunk:
            return b"".join(out)
        out.append(chunk)


class Pair:
    """An engine and an h2 client connected in memory; the preface and settings already exchanged."""

    def __init__(self, engine_class, client_settings=None, client_config=None, **engine_args):
        self.handler = Handler()
        self.engine = engine_class(self.handler, **engine_args)
        self.handler.engine = self.engine
        self.client = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding=None, **(client_config or {})))
        if client_settings:
            self.client.local_settings = h2.settings.Settings(client=True, initial_values=client_settings)
        self.client.initiate_connection()
        self.events = []
        self.exchange()

    def exchange(self, acknowledge=False):
        """Move bytes both ways until neither side has any; `acknowledge`: the client gives back every
        DATA byte it receives (its windows reopen)."""
        for _ in range(1000):
            moved = False
            data = self.client.data_to_send()
            if data:
                self.engine.receive(data)
                moved = True
            out = drain(self.engine)
            if out:
                events = self.client.receive_data(out)
                self.events.extend(events)
                if acknowledge:
                    for event in events:
                        if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                            self.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                moved = True
            if not moved:
                return
        raise AssertionError("the two sides never went quiet")

    def of(self, kind, stream_id=None):
        return [e for e in self.events if isinstance(e, kind) and (stream_id is None or e.stream_id == stream_id)]

    def response(self, stream_id):
        """(headers, body, trailers, ended) as the client decoded them."""
        got = self.of(h2.events.ResponseReceived, stream_id)
        trailers = self.of(h2.events.TrailersReceived, stream_id)
        return (got[0].headers if got else None,
                b"".join(e.data for e in self.of(h2.events.DataReceived, stream_id)),
                trailers[0].headers if trailers else None,
                bool(self.of(h2.events.StreamEnded, stream_id)))


def raw_frames(data, decoder=None):
    """The frames in `data` (the engine's output), as hyperframe parses them; HEADERS with their
    decoded fields in `.fields` (one HPACK decoder for a connection: pass it)."""
    frames, at = [], 0
    decoder = decoder or Decoder()
    while at < len(data):
        frame, length = Frame.parse_frame_header(memoryview(data[at:at + 9]))
        frame.parse_body(memoryview(data[at + 9:at + 9 + length]))
        if isinstance(frame, HeadersFrame):
            frame.fields = decoder.decode(frame.data, raw=True)
        frames.append(frame)
        at += 9 + length
    return frames


@pytest.fixture(params=_engines())
def engine_class(request):
    return request.param


def ok(body=b"hello, world!"):
    def answer(engine, stream_id, headers, end_stream):
        engine.respond(stream_id, 200, [(b"content-type", b"text/plain")], False)
        engine.send_data(stream_id, body, True)
    return answer


# --- the tests ---------------------------------------------------------------------------------------

def test_preface_and_settings(engine_class):
    pair = Pair(engine_class, max_concurrent_streams=50, initial_window_size=100000, max_frame_size=32768,
                max_header_list_size=20000)
    remote = pair.client.remote_settings
    assert (remote.max_concurrent_streams, remote.initial_window_size, remote.max_frame_size,
            remote.max_header_list_size, remote.enable_push) == (50, 100000, 32768, 20000, 0)
    assert pair.of(h2.events.SettingsAcknowledged)            # the engine acked the client's SETTINGS
    # the connection window: every stream's
    assert pair.client.outbound_flow_control_window == 50 * 100000
    assert not pair.engine.want_write and pair.engine.pending() == b""
    assert not pair.engine.closing and pair.engine.open_streams == 0 and pair.handler.calls == []


def test_connection_window_is_capped(engine_class):
    pair = Pair(engine_class, max_concurrent_streams=1000, initial_window_size=2**24)
    assert pair.client.outbound_flow_control_window == 2**31 - 1


def test_get_and_its_response(engine_class):
    pair = Pair(engine_class)
    pair.handler.answer = ok()
    pair.client.send_headers(1, GET + [(b"user-agent", b"test")], end_stream=True)
    pair.exchange()
    assert pair.handler.calls == [("request", 1, GET + [(b"user-agent", b"test")], True), ("closed", 1)]
    headers, body, trailers, ended = pair.response(1)
    assert headers == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert (body, trailers, ended) == (b"hello, world!", None, True)
    assert pair.engine.open_streams == 0 and pair.engine.last_stream_id == 1 and not pair.engine.closing
    # the same again, answered after receive() rather than from the callback
    pair.handler.answer = None
    pair.client.send_headers(3, GET, end_stream=True)
    pair.exchange()
    assert pair.engine.open_streams == 1
    pair.engine.respond(3, 204, [], True)
    pair.exchange()
    assert pair.response(3) == ([(b":status", b"204")], b"", None, True)
    assert pair.handler.kinds(3) == ["request", "closed"] and pair.engine.open_streams == 0


def test_response_headers_lowercased_and_connection_headers_dropped(engine_class):
    pair = Pair(engine_class)
    pair.client.send_headers(1, GET, end_stream=True)
    pair.exchange()
    pair.engine.respond(1, 200, [(b"Content-Type", b"text/plain"), (b"Connection", b"close"),
                                 (b"keep-alive", b"timeout=5"), (b"Proxy-Connection", b"x"),
                                 (b"Transfer-Encoding", b"chunked"), (b"Upgrade", b"h2c"),
                                 (b"X-Mixed-Case", b"Value Kept")], True)
    pair.exchange()
    assert pair.response(1)[0] == [(b":status", b"200"), (b"content-type", b"text/plain"),
                                   (b"x-mixed-case", b"Value Kept")]


def test_post_body_in_several_data_frames_and_request_trailers(engine_class):
    pair = Pair(engine_class)
    pair.client.send_headers(1, POST, end_stream=False)
    for part in (b"first ", b"second ", b"third"):
        pair.client.send_data(1, part)
    pair.exchange()
    assert pair.handler.kinds(1) == ["request", "data", "data", "data"]
    assert pair.handler.calls[0] == ("request", 1, POST, False)
    pair.client.send_data(1, b" fourth", end_stream=False)
    pair.client.send_headers(1, [(b"x-checksum", b"1234")], end_stream=True)     # trailers: dropped
    pair.exchange()
    assert pair.handler.kinds(1) == ["request", "data", "data", "data", "data", "end"]
    assert pair.handler.body(1) == b"first second third fourth"
    pair.engine.consumed(1, len(b"first second third fourth"))
    pair.engine.respond(1, 201, [], False)
    pair.engine.send_data(1, b"", True)
    pair.exchange()
    assert pair.response(1) == ([(b":status", b"201")], b"", None, True)
    assert pair.handler.kinds(1)[-1] == "closed"


def test_large_response_waits_for_the_client_window(engine_class):
    pair = Pair(engine_class, client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    pair.client.send_headers(1, GET, end_stream=True)
    pair.exchange()
    body = bytes(range(256)) * 20                            # 5120 bytes
    pair.engine.respond(1, 200, [], False)
    pair.engine.send_data(1, body, False)
    pair.engine.send_trailers(1, [(b"X-Digest", b"abc"), (b"connection", b"close")])
    pair.exchange()
    headers, got, trailers, ended = pair.response(1)
    assert headers == [(b":status", b"200")] and got == body[:1000] and not ended
    assert pair.engine.queued(1) == len(body) - 1000 and not pair.engine.want_write
    pair.client.increment_flow_control_window(2000, stream_id=1)
    pair.exchange()
    assert pair.response(1)[1] == body[:3000] and pair.engine.queued(1) == len(body) - 3000
    pair.client.increment_flow_control_window(len(body), stream_id=1)
    pair.exchange()
    assert pair.response(1) == ([(b":status", b"200")], body, [(b"x-digest", b"abc")], True)
    assert pair.engine.queued(1) == 0 and pair.handler.kinds(1) == ["request", "closed"]


def test_consumed_reopens_the_request_window(engine_class):
    pair = Pair(engine_class, initial_window_size=1000)
    pair.client.send_headers(1, POST, end_stream=False)
    assert pair.client.local_flow_control_window(1) == 1000
    pair.client.send_data(1, b"a" * 1000)
    pair.exchange()
    assert pair.handler.body(1) == b"a" * 1000
    assert pair.client.local_flow_control_window(1) == 0        # nothing consumed: the stream stalls
    pair.engine.consumed(1, 600)
    pair.exchange()
    assert pair.client.local_flow_control_window(1) == 600      # reopened by what was consumed
    pair.client.send_data(1, b"b" * 600, end_stream=True)
    pair.exchange()
    assert pair.handler.body(1) == b"a" * 1000 + b"b" * 600 and pair.handler.kinds(1)[-1] == "end"
    pair.engine.consumed(1, 1000)                               # the rest, and for a closed stream
    pair.engine.respond(1, 200, [], True)
    pair.exchange()
    assert pair.response(1)[3] and pair.handler.kinds(1)[-1] == "closed"
    pair.engine.consumed(1, 1)                                  # unknown now: the connection's only


def test_many_concurrent_streams_interleaved(engine_class):
    pair = Pair(engine_class)
    ids = list(range(1, 40, 2))                                 # 20 streams
    for sid in ids:
        pair.client.send_headers(sid, POST + [(b"x-stream", b"%d" % sid)], end_stream=False)
    for round_ in range(3):                                     # the bodies' frames interleaved
        for sid in reversed(ids):
            pair.client.send_data(sid, b"%d:%d;" % (sid, round_), end_stream=round_ == 2)
    pair.exchange()
    assert pair.engine.open_streams == len(ids)
    assert [call[1] for call in pair.handler.calls if call[0] == "request"] == ids
    for sid in reversed(ids):                                   # each echoes its body, 20 KiB more of it
        body = pair.handler.body(sid)
        assert body == b"".join(b"%d:%d;" % (sid, r) for r in range(3)) and pair.handler.kinds(sid)[-1] == "end"
        pair.engine.consumed(sid, len(body))
        pair.engine.respond(sid, 200, [(b"x-stream", b"%d" % sid)], False)
        pair.engine.send_data(sid, body * 2000, True)
    pair.exchange(acknowledge=True)
    order = [e.stream_id for e in pair.of(h2.events.DataReceived)]
    assert order.index(ids[-1]) < len(order) - 1 - order[::-1].index(ids[0])    # shared, not one by one
    for sid in ids:
        headers, body, _, ended = pair.response(sid)
        assert headers == [(b":status", b"200"), (b"x-stream", b"%d" % sid)] and ended
        assert body == pair.handler.body(sid) * 2000
        assert pair.handler.kinds(sid)[-1] == "closed"
    assert pair.engine.open_streams == 0


def test_rst_stream_from_the_client(engine_class):
    pair = Pair(engine_class)
    pair.client.send_headers(1, POST, end_stream=False)
    pair.client.send_data(1, b"partial")
    pair.exchange()
    pair.engine.respond(1, 200, [], False)
    pair.engine.send_data(1, b"x" * 100000, False)             # more than the windows let through
    pair.exchange()
    pair.client.reset_stream(1, error_code=8)                   # CANCEL
    pair.exchange()
    assert pair.handler.kinds(1) == ["request", "data", "reset", "closed"]
    assert ("reset", 1, 8) in pair.handler.calls
    assert pair.engine.open_streams == 0 and pair.engine.queued(1) == 0
    before = len(pair.events)
    pair.engine.send_data(1, b"late", True)                     # the layer had not heard yet: ignored
    pair.engine.consumed(1, 7)
    pair.exchange()
    assert pair.events[before:] == []
    pair.client.acknowledge_received_data(len(pair.response(1)[1]), 1)   # the connection window back
    pair.handler.answer = ok()                                  # the connection goes on
    pair.client.send_headers(3, GET, end_stream=True)
    pair.exchange()
    assert pair.response(3)[1:] == (b"hello, world!", None, True)


def test_reset_by_the_layer(engine_class):
    pair = Pair(engine_class)
    pair.client.send_headers(1, GET, end_stream=True)
    pair.exchange()
    pair.engine.respond(1, 200, [], False)
    pair.engine.send_data(1, b"abc", False)
    pair.engine.reset(1, 2)
    pair.exchange()
    assert [e.error_code for e in pair.of(h2.events.StreamReset, 1)] == [2]
    assert pair.handler.kinds(1) == ["request", "closed"]       # no h2_reset for the layer's own reset
    assert pair.engine.queued(1) == 0


def test_goaway_notice_then_goaway(engine_class):
    pair = Pair(engine_class)
    pair.client.send_headers(1, GET, end_stream=True)
    pair.client.send_headers(3, GET, end_stream=True)
    pair.exchange()
    assert pair.engine.last_stream_id == 3 and pair.engine.open_streams == 2
    decoder = Decoder()
    pair.engine.goaway_notice()
    frames = raw_frames(drain(pair.engine), decoder)
    assert [(f.last_stream_id, f.error_code) for f in frames if isinstance(f, GoAwayFrame)] == [(2**31 - 1, 0)]
    assert not pair.engine.closing
    # the client opens stream 5 before it sees the final GOAWAY
    pair.client.send_headers(5, GET, end_stream=True)
    late = pair.client.data_to_send()
    pair.engine.goaway()                                        # last stream id: the last processed, 3
    pair.engine.receive(late)
    frames = raw_frames(drain(pair.engine), decoder)
    assert [(f.last_stream_id, f.error_code) for f in frames if isinstance(f, GoAwayFrame)] == [(3, 0)]
    assert [c[1] for c in pair.handler.calls if c[0] == "request"] == [1, 3]     # 5 refused
    assert not pair.engine.closing                              # streams 1 and 3 are still open
    pair.engine.respond(1, 200, [], True)
    pair.engine.respond(3, 200, [], False)
    pair.engine.send_data(3, b"bye", True)
    frames = raw_frames(drain(pair.engine), decoder)
    assert [(f.stream_id, f.fields) for f in frames if isinstance(f, HeadersFrame)] == [
        (1, [(b":status", b"200")]), (3, [(b":status", b"200")])]
    assert b"".join(f.data for f in frames if f.type == 0 and f.stream_id == 3) == b"bye"
    assert pair.engine.open_streams == 0 and pair.engine.closing
    assert all(f.stream_id != 5 or isinstance(f, RstStreamFrame) for f in frames)


def test_malformed_header_blocks_are_reset(engine_class):
    pair = Pair(engine_class, client_config={"validate_outbound_headers": False,
                                             "normalize_outbound_headers": False})
    pair.handler.answer = ok()
    pair.client.send_headers(1, GET + [(b"X-Upper", b"1")], end_stream=True)
    pair.client.send_headers(3, GET + [(b"connection", b"keep-alive")], end_stream=True)
    pair.client.send_headers(5, GET[:3], end_stream=True)                  # no :path
    pair.client.send_headers(7, GET, end_stream=True)
    pair.exchange()
    assert {e.stream_id: e.error_code for e in pair.of(h2.events.StreamReset)} == {1: 1, 3: 1, 5: 1}
    assert [c[1] for c in pair.handler.calls if c[0] == "request"] == [7]
    assert [c for c in pair.handler.calls if c[1] != 7] == []
    assert pair.response(7)[1:] == (b"hello, world!", None, True)
    assert not pair.engine.closing


def test_oversized_header_list_hpack_bomb(engine_class):
    pair = Pair(engine_class, max_header_list_size=16384)
    # one 4000-byte field put in the HPACK table, then referenced by index 2000 times: ~8 MB decoded
    pair.client.send_headers(1, GET + [(b"x-bomb", b"b" * 4000)] * 2000, end_stream=True)
    wire = pair.client.data_to_send()
    assert len(wire) < 20000
    pair.engine.receive(wire)
    pair.client.receive_data(b"")
    pair.handler.answer = ok()
    pair.client.send_headers(3, GET, end_stream=True)           # the HPACK state survived
    pair.exchange()
    assert pair.handler.kinds(1) in (["refused", "closed"], [])         # a 431 to send, or a reset
    assert pair.response(1)[0] == [(b":status", b"431")] or pair.of(h2.events.StreamReset, 1)
    assert pair.response(3)[1:] == (b"hello, world!", None, True)
    # with a body: the body is not delivered, and once answered the stream is reset (NO_ERROR, RFC 9113
    # 8.1) rather than left open for a body nobody reads
    pair.client.send_headers(5, POST + [(b"x-big", b"b" * 4000)] * 5, end_stream=False)
    pair.client.send_data(5, b"x" * 5000)
    pair.exchange()
    assert pair.handler.kinds(5) in (["refused", "closed"], [])
    assert pair.response(5)[0] == [(b":status", b"431")] or pair.of(h2.events.StreamReset, 5)
    assert pair.engine.open_streams == 0


def test_bad_preface_is_a_connection_error(engine_class):
    handler = Handler()
    engine = engine_class(handler)
    handler.engine = engine
    engine.receive(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    frames = raw_frames(drain(engine))
    assert isinstance(frames[0], SettingsFrame)
    assert [f.error_code for f in frames if isinstance(f, GoAwayFrame)] == [1]        # PROTOCOL_ERROR
    assert engine.closing and not engine.want_write
    engine.receive(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")                             # ignored now
    assert drain(engine) == b"" and handler.calls == []


def test_a_ping_flood_from_a_peer_that_does_not_read(engine_class):
    pair = Pair(engine_class)
    for i in range(1500):
        pair.client.ping(b"%08d" % i)
    pair.engine.receive(pair.client.data_to_send())
    assert pair.engine.closing
    frames = raw_frames(drain(pair.engine))
    assert [f.error_code for f in frames if isinstance(f, GoAwayFrame)] == [11]       # ENHANCE_YOUR_CALM
    assert sum(1 for f in frames if f.type == 6) <= 1000                             # PING acks


def test_a_raising_handler_is_logged_and_its_stream_reset(engine_class, caplog):
    pair = Pair(engine_class)

    def fail(engine, stream_id, headers, end_stream):
        if stream_id == 1:
            raise ValueError("app bug")
        ok()(engine, stream_id, headers, end_stream)
    pair.handler.answer = fail
    with caplog.at_level(logging.ERROR, logger="fastcluster"):
        pair.client.send_headers(1, GET, end_stream=True)
        pair.client.send_headers(3, GET, end_stream=True)
        pair.exchange()
    assert any(r.name == "fastcluster" and r.exc_info and "app bug" in str(r.exc_info[1]) for r in caplog.records)
    assert [e.error_code for e in pair.of(h2.events.StreamReset, 1)] == [2]          # INTERNAL_ERROR
    assert pair.handler.kinds(1) == ["request", "reset", "closed"]
    assert pair.response(3)[1:] == (b"hello, world!", None, True)                  # the session goes on


def test_close_from_a_callback_stops_everything(engine_class):
    pair = Pair(engine_class)
    pair.handler.answer = lambda engine, stream_id, headers, end_stream: engine.close()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.client.send_headers(3, GET, end_stream=True)
    pair.engine.receive(pair.client.data_to_send())
    assert [c[0] for c in pair.handler.calls] == ["request"]
    assert pair.engine.pending() == b"" and not pair.engine.want_write
    pair.engine.receive(b"\x00" * 100)
    pair.engine.close()
    assert [c[0] for c in pair.handler.calls] == ["request"]


def test_the_native_engines_stub_names_what_it_has():
    native = pytest.importorskip("fastcluster._nghttp2")
    import ast
    import os
    with open(os.path.join(os.path.dirname(native.__file__), "_nghttp2.pyi"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    engine = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Engine")
    stubbed = {node.name for node in engine.body if isinstance(node, ast.FunctionDef) and node.name != "__init__"}
    assert stubbed == {name for name in dir(native.Engine) if not name.startswith("_")}
    constants = {node.target.id for node in tree.body if isinstance(node, ast.AnnAssign)}
    assert constants == {name for name in dir(native) if name.isupper()}
