"""H2Engine (fastcluster/h2engine.py) driven by an h2 client in memory: each test asserts on the handler's
callbacks and on what the client decoded. The engine-independent contract is tests/unit/test_h2engine.py's;
these are the h2 engine's own, with the cases its framing layer handles itself (frames cut anywhere, floods,
a client's GOAWAY, a callback that raises)."""

import logging

import pytest

pytest.importorskip("h2")

from h2 import events as ev                            # noqa: E402
from h2.config import H2Configuration                  # noqa: E402
from h2.connection import H2Connection                 # noqa: E402
from h2.settings import SettingCodes                   # noqa: E402
from hyperframe.frame import (DataFrame, Frame, GoAwayFrame, HeadersFrame, RstStreamFrame,  # noqa: E402
                              SettingsFrame, WindowUpdateFrame)

from fastcluster import h2engine                       # noqa: E402
from fastcluster.h2engine import PREFACE, H2Engine     # noqa: E402

pytestmark = pytest.mark.timeout(30)

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.test"), (b":path", b"/a")]
POST = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"example.test"), (b":path", b"/up")]


class Recorder:
    """The handler: every callback recorded as a tuple; `answer(engine, sid, headers)` called on a request."""

    def __init__(self):
        self.calls = []
        self.engine = None
        self.answer = None

    def h2_request(self, sid, headers, end_stream):
        self.calls.append(("request", sid, headers, end_stream))
        if self.answer:
            self.answer(self.engine, sid, headers)

    def h2_refused(self, sid, status):
        self.calls.append(("refused", sid, status))
        if self.answer:
            self.answer(self.engine, sid, status)

    def h2_data(self, sid, data):
        self.calls.append(("data", sid, data))

    def h2_end(self, sid):
        self.calls.append(("end", sid))

    def h2_reset(self, sid, code):
        self.calls.append(("reset", sid, code))

    def h2_closed(self, sid):
        self.calls.append(("closed", sid))

    def kinds(self, sid):
        return [call[0] for call in self.calls if call[1] == sid]

    def body(self, sid):
        return b"".join(call[2] for call in self.calls if call[0] == "data" and call[1] == sid)


def hello(engine, sid, headers):
    engine.respond(sid, 200, [(b"content-type", b"text/plain")], False)
    engine.send_data(sid, b"hello, world!", True)


class Pair:
    """An H2Engine and an h2 client, bytes moved between them in memory, the client's input in `chunk`s."""

    def __init__(self, chunk=65536, client_config=None, **engine_args):
        self.handler = Recorder()
        self.engine = self.handler.engine = H2Engine(self.handler, **engine_args)
        self.client = H2Connection(client_config or H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        self.chunk = chunk
        self.events = []    # what the client decoded

    def to_server(self, data=None):
        data = self.client.data_to_send() if data is None else data
        for i in range(0, len(data), self.chunk):
            self.engine.receive(data[i:i + self.chunk])
        return len(data)

    def to_client(self):
        data = self.engine.pending()
        if data:
            self.events += self.client.receive_data(data)
        return len(data)

    def pump(self):
        while self.to_server() + self.to_client():
            pass

    def of(self, kind, sid=None):
        return [e for e in self.events if isinstance(e, kind) and (sid is None or e.stream_id == sid)]

    def response(self, sid):
        """(headers, body, ended) as the client decoded them."""
        headers = [e.headers for e in self.of(ev.ResponseReceived, sid)]
        body = b"".join(e.data for e in self.of(ev.DataReceived, sid))
        return (headers[0] if headers else None), body, bool(self.of(ev.StreamEnded, sid))


def frames(data):
    """The frames of raw engine output, parsed with hyperframe."""
    out = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9:9 + length]))
        out.append(frame)
        data = data[9 + length:]
    return out


def test_preface_and_settings_exchange():
    engine = H2Engine(Recorder(), max_concurrent_streams=50, initial_window_size=100000, max_frame_size=32768,
                      max_header_list_size=8192)
    first = frames(engine.pending())
    assert [type(f) for f in first] == [SettingsFrame, WindowUpdateFrame]   # SETTINGS first (RFC 9113 3.4)
    assert first[1].stream_id == 0 and first[1].window_increment == 50 * 100000 - 65535

    pair = Pair(max_concurrent_streams=50, initial_window_size=100000, max_frame_size=32768,
                max_header_list_size=8192)
    pair.pump()
    (changed,) = pair.of(ev.RemoteSettingsChanged)
    assert {code: s.new_value for code, s in changed.changed_settings.items()} == {
        SettingCodes.MAX_CONCURRENT_STREAMS: 50, SettingCodes.INITIAL_WINDOW_SIZE: 100000,
        SettingCodes.MAX_FRAME_SIZE: 32768, SettingCodes.MAX_HEADER_LIST_SIZE: 8192, SettingCodes.ENABLE_PUSH: 0}
    assert pair.of(ev.SettingsAcknowledged)                         # the client's SETTINGS acked
    assert pair.client.outbound_flow_control_window == 50 * 100000  # the connection window raised at once
    assert not pair.engine.want_write and not pair.engine.closing and pair.engine.open_streams == 0


@pytest.mark.parametrize("chunk", [65536, 1, 7])
def test_get_and_its_response(chunk):
    pair = Pair(chunk=chunk)
    pair.handler.answer = hello
    pair.client.send_headers(1, GET + [(b"accept", b"*/*"), (b"cookie", b"a=1"), (b"cookie", b"b=2")],
                             end_stream=True)
    pair.pump()
    headers = GET + [(b"accept", b"*/*"), (b"cookie", b"a=1"), (b"cookie", b"b=2")]   # wire order, kept apart
    assert pair.handler.calls == [("request", 1, headers, True), ("closed", 1)]   # no h2_end: END on HEADERS
    assert pair.response(1) == ([(b":status", b"200"), (b"content-type", b"text/plain")], b"hello, world!", True)
    assert pair.engine.open_streams == 0 and pair.engine.last_stream_id == 1 and not pair.engine.want_write


def test_response_headers_lowercased_and_connection_headers_dropped():
    pair = Pair()
    pair.handler.answer = lambda engine, sid, headers: engine.respond(sid, 204, [
        (b"X-Thing", b"  one  "), (b"Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"), (b"Upgrade", b"h2c"), (b"Proxy-Connection", b"close"),
        (b"Set-Cookie", b"a=b")], True)
    pair.client.send_headers(1, GET, end_stream=True)
    pair.pump()
    assert pair.response(1) == ([(b":status", b"204"), (b"x-thing", b"one"), (b"set-cookie", b"a=b")], b"", True)


def test_invalid_response_header_raises_before_encoding():
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.pump()
    for bad in ([(b"x-split", b"a\r\nb")], [(b"bad name", b"x")], [(b":path", b"/")]):
        with pytest.raises(ValueError):
            pair.engine.respond(1, 200, bad, True)
    hello(pair.engine, 1, None)          # the encoder's table is as the client's: the stream still answers
    pair.pump()
    assert pair.response(1)[1:] == (b"hello, world!", True)


def test_post_body_in_several_data_frames():
    pair = Pair()
    pair.client.send_headers(1, POST + [(b"content-length", b"9")], end_stream=False)
    pair.pump()
    for piece, end in ((b"abc", False), (b"defg", False), (b"hi", True)):
        pair.client.send_data(1, piece, end_stream=end)
    pair.pump()
    assert pair.handler.calls[1:] == [("data", 1, b"abc"), ("data", 1, b"defg"), ("data", 1, b"hi"), ("end", 1)]
    assert pair.handler.calls[0][3] is False
    hello(pair.engine, 1, None)
    pair.pump()
    assert pair.handler.calls[-1] == ("closed", 1)


def test_padding_is_consumed_by_the_engine():
    pair = Pair(initial_window_size=1000, max_concurrent_streams=1)
    pair.pump()
    pair.client.send_headers(1, POST, end_stream=False)
    for _ in range(10):     # 10 x (100 + 101 padding) bytes through a 1000-byte window: only the data counts
        pair.client.send_data(1, b"x" * 100, pad_length=100)
        pair.to_server()
        pair.engine.consumed(1, 100)
        pair.pump()
    assert pair.handler.body(1) == b"x" * 1000


def test_large_response_through_a_small_client_window():
    pair = Pair()
    pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    body = bytes(range(256)) * 400   # 102400 bytes
    pair.handler.answer = lambda engine, sid, headers: (engine.respond(sid, 200, [], False),
                                                        engine.send_data(sid, body, True))
    pair.client.send_headers(1, GET, end_stream=True)
    pair.pump()
    assert pair.response(1)[1:] == (body[:1000], False)        # the stream's window, no more
    assert pair.engine.queued(1) == len(body) - 1000 and not pair.engine.want_write
    pair.client.increment_flow_control_window(5000, stream_id=1)
    pair.pump()
    assert pair.response(1)[1:] == (body[:6000], False) and pair.engine.queued(1) == len(body) - 6000
    assert pair.engine.pending() == b""
    while not pair.response(1)[2]:
        pair.client.increment_flow_control_window(30000, stream_id=1)
        pair.client.increment_flow_control_window(30000)
        pair.pump()
    assert pair.response(1)[1] == body and pair.engine.queued(1) == 0
    assert max(len(e.data) for e in pair.of(ev.DataReceived, 1)) <= 16384
    assert pair.handler.calls[-1] == ("closed", 1)


@pytest.mark.parametrize("window", [65535, 20000, 200000])
def test_consumed_reopens_the_request_window(window):
    pair = Pair(initial_window_size=window)
    pair.pump()
    pair.client.send_headers(1, POST, end_stream=False)
    body = b"b" * (window + 5000)
    sent = 0
    while pair.client.local_flow_control_window(1):
        n = min(pair.client.local_flow_control_window(1), pair.client.max_outbound_frame_size, len(body) - sent)
        pair.client.send_data(1, body[sent:sent + n])
        sent += n
        pair.pump()
    assert sent == window and len(pair.handler.body(1)) == window    # stalled: nothing consumed yet
    pair.engine.consumed(1, window)
    pair.pump()
    assert pair.client.local_flow_control_window(1) == window        # reopened by what the app took
    pair.client.send_data(1, body[sent:], end_stream=True)
    pair.pump()
    assert pair.handler.body(1) == body and pair.handler.calls[-1] == ("end", 1)


def test_concurrent_streams_interleave():
    pair = Pair()
    pair.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**20})
    pair.client.increment_flow_control_window(2**24)
    sids = [1, 3, 5, 7, 9]
    for sid in sids:
        pair.client.send_headers(sid, POST, end_stream=False)
    for round_ in range(3):      # the bodies' frames interleaved on the wire
        for sid in sids:
            pair.client.send_data(sid, b"%d:%d " % (sid, round_), end_stream=round_ == 2)
    pair.pump()
    data = [(c[1], c[2]) for c in pair.handler.calls if c[0] == "data"]
    assert data == [(sid, b"%d:%d " % (sid, r)) for r in range(3) for sid in sids]
    assert pair.engine.open_streams == 5
    for sid in reversed(sids):
        pair.engine.respond(sid, 200, [], False)
        pair.engine.send_data(sid, bytes([sid]) * 50000, True)
    pair.pump()
    order = [e.stream_id for e in pair.of(ev.DataReceived)]
    assert sorted(order[:5]) == sids                 # round robin: a frame of each before a second of any
    for sid in sids:
        assert pair.response(sid)[1:] == (bytes([sid]) * 50000, True)
    assert pair.engine.open_streams == 0 and sorted(c[1] for c in pair.handler.calls if c[0] == "closed") == sids


def test_client_reset_calls_h2_reset_then_h2_closed_and_drops_queued_data():
    pair = Pair()
    pair.client.send_headers(1, POST, end_stream=False)
    pair.pump()
    pair.engine.respond(1, 200, [], False)
    pair.engine.send_data(1, b"x" * 1000, False)
    pair.client.reset_stream(1, error_code=8)
    pair.to_server()
    assert pair.handler.kinds(1) == ["request", "reset", "closed"] and pair.handler.calls[1] == ("reset", 1, 8)
    assert pair.engine.queued(1) == 0 and pair.engine.open_streams == 0
    assert not any(isinstance(f, DataFrame) for f in frames(pair.engine.pending()))
    pair.engine.send_data(1, b"late", True)       # ignored: the stream is gone
    pair.engine.respond(1, 200, [], True)
    assert pair.engine.pending() == b"" and pair.handler.kinds(1) == ["request", "reset", "closed"]


def test_goaway_notice_then_goaway_refuses_later_streams():
    pair = Pair()
    pair.pump()
    for sid in (1, 3):
        pair.client.send_headers(sid, GET, end_stream=True)
    pair.to_server()
    pair.engine.goaway_notice()
    out = frames(pair.engine.pending())
    assert [(f.last_stream_id, f.error_code) for f in out if isinstance(f, GoAwayFrame)] == [(2**31 - 1, 0)]
    pair.client.send_headers(5, GET, end_stream=True)      # in flight before the client read the notice
    pair.to_server()
    assert pair.engine.last_stream_id == 5 and pair.engine.open_streams == 3
    pair.engine.goaway()
    pair.client.send_headers(7, GET, end_stream=True)      # after the final GOAWAY: refused
    pair.to_server()
    out = frames(pair.engine.pending())
    assert [(f.last_stream_id, f.error_code) for f in out if isinstance(f, GoAwayFrame)] == [(5, 0)]
    assert [(f.stream_id, f.error_code) for f in out if isinstance(f, RstStreamFrame)] == [(7, 7)]
    assert [c[1] for c in pair.handler.calls if c[0] == "request"] == [1, 3, 5]
    assert not pair.engine.closing                         # streams 1, 3, 5 are still answered
    for sid in (1, 3, 5):
        hello(pair.engine, sid, None)
    out = frames(pair.engine.pending())
    assert sorted(f.stream_id for f in out if isinstance(f, DataFrame)) == [1, 3, 5]
    assert pair.engine.closing and not pair.engine.want_write


def test_goaway_with_a_lower_last_id_resets_the_streams_above_it():
    pair = Pair()
    for sid in (1, 3):
        pair.client.send_headers(sid, GET, end_stream=True)
    pair.to_server()
    pair.engine.goaway(1, 0)
    out = frames(pair.engine.pending())
    assert [(f.stream_id, f.error_code) for f in out if isinstance(f, RstStreamFrame)] == [(3, 7)]
    assert pair.handler.calls[-2:] == [("reset", 3, 7), ("closed", 3)]
    assert pair.engine.open_streams == 1 and not pair.engine.closing


@pytest.mark.parametrize("bad", [
    GET + [(b"X-Upper", b"1")],                               # an uppercase name
    GET + [(b"connection", b"keep-alive")],                    # connection-specific
    GET + [(b"te", b"gzip")],                                  # TE other than trailers
    GET[:3],                                                   # no :path
    GET[:3] + [(b":path", b"a")],                              # a :path not from the root
    [(b"accept", b"*/*")] + GET,                               # a pseudo-header after a regular field
    GET + [(b":path", b"/b")],                                 # a pseudo-header twice
    GET + [(b"x-a", b"a\0b")],                                 # NUL in a value
    POST + [(b"content-length", b"12x")],                      # h2 itself would end the connection
    [(b":status", b"200")] + GET,                              # a response pseudo-header
])
def test_malformed_header_block_resets_the_stream_only(bad):
    config = H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False,
                             normalize_outbound_headers=False)
    pair = Pair(client_config=config)
    pair.handler.answer = hello
    pair.client.send_headers(1, bad, end_stream=True)
    pair.pump()
    assert pair.handler.calls == []
    assert [(e.stream_id, e.error_code) for e in pair.of(ev.StreamReset)] == [(1, 1)]   # PROTOCOL_ERROR
    pair.client.send_headers(3, GET, end_stream=True)         # the session (and its HPACK state) goes on
    pair.pump()
    assert pair.response(3)[1:] == (b"hello, world!", True) and not pair.engine.closing


def test_hpack_bomb_is_refused_with_431_and_the_table_stays_in_step():
    pair = Pair()
    pair.pump()
    big = b"v" * 4000             # one dynamic table entry (4037 bytes of the 4096), referenced 20 times
    pair.handler.answer = lambda engine, sid, arg: engine.respond(sid, 431 if arg == 431 else 200, [], True)
    pair.client.send_headers(1, GET + [(b"x-big", big)] * 20, end_stream=True)
    wire = pair.client.data_to_send()
    assert len(wire) < 4200       # 80 KB of headers from 4 KB on the wire
    pair.to_server(wire)
    pair.pump()
    assert pair.handler.calls == [("refused", 1, 431), ("closed", 1)]
    assert pair.response(1) == ([(b":status", b"431")], b"", True)
    pair.client.send_headers(3, GET + [(b"x-big", big)], end_stream=True)   # the entry referenced again
    pair.pump()
    assert pair.handler.calls[2] == ("request", 3, GET + [(b"x-big", big)], True)
    assert not pair.engine.closing


def test_header_block_over_the_limit_in_continuations_ends_the_session():
    pair = Pair(max_header_list_size=20000)
    pair.pump()
    fields = GET + [(b"x-%d" % i, bytes([65 + i % 26]) * 1000) for i in range(25)]   # no huffman gain
    pair.client.send_headers(1, fields, end_stream=True)
    pair.to_server()
    assert pair.engine.closing and pair.handler.calls == []
    (goaway,) = [f for f in frames(pair.engine.pending()) if isinstance(f, GoAwayFrame)]
    assert goaway.error_code == h2engine.ENHANCE_YOUR_CALM


def test_bad_preface_queues_goaway_and_closes():
    engine = H2Engine(Recorder())
    engine.receive(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
    assert engine.closing and engine.want_write
    out = frames(engine.pending())
    assert isinstance(out[0], SettingsFrame) and isinstance(out[-1], GoAwayFrame)
    assert out[-1].error_code == h2engine.PROTOCOL_ERROR
    engine.receive(PREFACE)      # ignored from now on
    assert engine.pending() == b""


def test_preface_cut_anywhere_is_accepted():
    engine = H2Engine(Recorder())
    engine.receive(PREFACE[:5])
    engine.receive(PREFACE[5:])
    assert not engine.closing


def test_ping_flood_from_a_client_that_does_not_read():
    pair = Pair()
    pair.pump()
    for i in range(1000):
        pair.client.ping(b"%08d" % i)
    pair.to_server()
    assert not pair.engine.closing          # 1000 acks queued: the limit
    pair.client.ping(b"one more")
    pair.to_server()
    assert pair.engine.closing
    (goaway,) = [f for f in frames(pair.engine.pending()) if isinstance(f, GoAwayFrame)]
    assert goaway.error_code == h2engine.ENHANCE_YOUR_CALM


def test_pings_answered_while_the_client_reads():
    pair = Pair()
    for i in range(3000):
        pair.client.ping(b"%08d" % i)
        if i % 500 == 0:
            pair.pump()
    pair.pump()
    assert len(pair.of(ev.PingAckReceived)) == 3000 and not pair.engine.closing


def test_frame_over_max_frame_size_is_refused_from_its_header():
    engine = H2Engine(Recorder())
    engine.receive(PREFACE + b"\x00\x40\x01\x00\x00\x00\x00\x00\x00")   # a 16385-byte DATA frame's header
    assert engine.closing
    assert frames(engine.pending())[-1].error_code == h2engine.FRAME_SIZE_ERROR


def test_streams_over_max_concurrent_streams_are_refused():
    pair = Pair(max_concurrent_streams=2)
    for sid in (1, 3, 5):     # sent before the client read our SETTINGS: its h2 would not send the third
        pair.client.send_headers(sid, GET, end_stream=True)
    pair.pump()
    assert [c[1] for c in pair.handler.calls if c[0] == "request"] == [1, 3]
    assert [(e.stream_id, e.error_code) for e in pair.of(ev.StreamReset)] == [(5, 7)]   # REFUSED_STREAM
    hello(pair.engine, 1, None)
    pair.pump()
    pair.client.send_headers(7, GET, end_stream=True)    # stream 1 closed: room again
    pair.pump()
    assert [c[1] for c in pair.handler.calls if c[0] == "request"] == [1, 3, 7]


def test_a_callback_that_raises_is_logged_and_resets_its_stream(caplog):
    pair = Pair()

    def answer(engine, sid, headers):
        if sid == 1:
            raise RuntimeError("app bug")
        hello(engine, sid, headers)

    pair.handler.answer = answer
    pair.client.send_headers(1, GET, end_stream=True)
    pair.client.send_headers(3, GET, end_stream=True)
    with caplog.at_level(logging.ERROR, logger="fastcluster"):
        pair.pump()
    assert "h2_request failed" in caplog.text and "app bug" in caplog.text
    assert [(e.stream_id, e.error_code) for e in pair.of(ev.StreamReset)] == [(1, 2)]   # INTERNAL_ERROR
    assert pair.handler.kinds(1) == ["request", "reset", "closed"]
    assert pair.response(3)[1:] == (b"hello, world!", True)


def test_connection_error_after_a_request_in_the_same_chunk():
    pair = Pair()
    pair.pump()
    pair.client.send_headers(1, GET, end_stream=True)
    wire = pair.client.data_to_send() + b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # increment 0
    pair.engine.receive(wire)
    assert pair.handler.calls == [("request", 1, GET, True)]    # the frame before the error was read
    assert pair.engine.closing
    assert frames(pair.engine.pending())[-1].error_code == h2engine.PROTOCOL_ERROR


def test_client_goaway_lets_streams_in_flight_finish():
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    pair.engine.receive(GoAwayFrame(0, last_stream_id=0).serialize())
    assert not pair.engine.closing
    hello(pair.engine, 1, None)
    out = frames(pair.engine.pending())
    assert [type(f) for f in out][-2:] == [HeadersFrame, DataFrame]
    assert pair.engine.closing                  # no stream left, and the client said it goes


def test_trailers_end_the_request_and_are_dropped():
    pair = Pair()
    pair.client.send_headers(1, POST, end_stream=False)
    pair.client.send_data(1, b"body")
    pair.client.send_headers(1, [(b"x-checksum", b"abc")], end_stream=True)
    pair.pump()
    assert pair.handler.calls[1:] == [("data", 1, b"body"), ("end", 1)]


def test_response_trailers_and_empty_end():
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.client.send_headers(3, GET, end_stream=True)
    pair.pump()
    pair.engine.respond(1, 200, [], False)
    pair.engine.send_data(1, b"abc", False)
    pair.engine.send_trailers(1, [(b"X-Sum", b"1")])
    pair.engine.respond(3, 200, [], False)
    pair.engine.send_data(3, b"", True)
    pair.pump()
    assert [e.headers for e in pair.of(ev.TrailersReceived, 1)] == [[(b"x-sum", b"1")]]
    assert pair.response(1)[1:] == (b"abc", True) and pair.response(3)[1:] == (b"", True)
    assert sorted(c[1] for c in pair.handler.calls if c[0] == "closed") == [1, 3]


def test_close_drops_everything():
    pair = Pair()
    pair.handler.answer = hello
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    pair.engine.close()
    pair.engine.close()
    assert pair.engine.pending() == b"" and not pair.engine.want_write
    pair.engine.receive(b"anything")
    assert pair.handler.kinds(1) == ["request"]


def test_engine_class_falls_back_to_h2engine():
    from fastcluster import h2codes

    assert h2codes.engine_class(prefer_native=False) is H2Engine
    native = h2codes.engine_class()
    assert native is H2Engine or native.__module__ == "fastcluster._nghttp2"


def test_closed_streams_are_swept_from_h2():
    pair = Pair()
    pair.handler.answer = hello
    held = []
    for i in range(300):
        pair.client.send_headers(2 * i + 1, GET, end_stream=True)
        pair.pump()
        held.append(len(pair.engine._conn.streams))
    assert max(held) <= 128 and len(pair.of(ev.StreamEnded)) == 300


def test_body_given_before_the_headers_waits_for_them():
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.pump()
    pair.engine.send_data(1, b"early", True)
    assert not pair.engine.want_write and pair.engine.pending() == b""
    pair.engine.respond(1, 103, [(b"link", b"</a.css>; rel=preload")], False)    # informational first
    pair.engine.respond(1, 200, [], False)
    with pytest.raises(ValueError):
        pair.engine.respond(1, 200, [], False)
    pair.pump()
    assert [e.headers for e in pair.of(ev.InformationalResponseReceived, 1)] == [
        [(b":status", b"103"), (b"link", b"</a.css>; rel=preload")]]
    assert pair.response(1) == ([(b":status", b"200")], b"early", True)


def test_many_small_literal_fields_over_the_limit_are_refused_with_431():
    pair = Pair()
    pair.pump()
    pair.handler.answer = lambda engine, sid, arg: engine.respond(sid, 431 if arg == 431 else 200, [], True)
    fields = GET + [(b"x-%d" % i, b"v") for i in range(2500)]    # 2500 x 37+ bytes: over 65536
    pair.client.send_headers(1, fields, end_stream=True)
    pair.client.send_headers(3, GET + [(b"x-2499", b"v")], end_stream=True)   # its entry, from the table
    pair.pump()
    assert pair.handler.calls[:2] == [("refused", 1, 431), ("request", 3, GET + [(b"x-2499", b"v")], True)]
    assert pair.response(1)[0] == [(b":status", b"431")] and pair.response(3)[0] == [(b":status", b"200")]


def test_hpack_decoding_error_is_a_compression_error():
    engine = H2Engine(Recorder())
    engine.receive(PREFACE + SettingsFrame(0).serialize() + b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x80")
    assert engine.closing
    assert frames(engine.pending())[-1].error_code == h2engine.COMPRESSION_ERROR


def test_the_same_callbacks_whatever_the_cuts():
    def exchange(cuts):
        pair = Pair()
        pair.handler.answer = hello
        client = pair.client
        client.send_headers(1, GET, end_stream=True)
        client.send_headers(3, POST, end_stream=False)
        client.send_data(3, b"x" * 16000)
        client.ping(b"12345678")
        client.send_headers(5, POST, end_stream=False)
        client.send_data(5, b"y" * 100, pad_length=17)
        client.reset_stream(5, 8)
        client.send_data(3, b"z", end_stream=True)
        client.send_headers(7, GET + [(b"x-long", b"w" * 30000)], end_stream=True)   # HEADERS + CONTINUATION
        wire, pos = client.data_to_send(), 0
        for cut in cuts:
            pair.engine.receive(wire[pos:pos + cut])
            pos += cut
        pair.engine.receive(wire[pos:])
        while pair.to_client():
            pass
        return pair.handler.calls, [type(e) for e in pair.events]

    whole = exchange([])
    assert [c[:2] for c in whole[0] if c[0] != "data"] == [
        ("request", 1), ("request", 3), ("request", 5), ("reset", 5), ("closed", 5), ("end", 3), ("request", 7),
        ("closed", 1), ("closed", 3), ("closed", 7)]
    for cuts in ([1] * 200, [9] * 50 + [4000, 3, 5], [24, 9, 8, 1, 16384, 2], [5, 100] * 30):
        assert exchange(cuts) == whole


@pytest.mark.parametrize("fields", [
    [(b":method", b"OPTIONS"), (b":scheme", b"https"), (b":authority", b"example.test"), (b":path", b"*")],
    [(b":method", b"CONNECT"), (b":authority", b"example.test:443")],
    GET + [(b"te", b"trailers"), (b"x-empty", b""), (b"content-length", b"0")],
])
def test_well_formed_requests_at_the_edges_are_accepted(fields):
    pair = Pair()
    pair.client.send_headers(1, fields, end_stream=True)
    pair.pump()
    assert pair.handler.calls == [("request", 1, fields, True)]


def test_a_stream_error_found_by_h2_resets_that_stream_only():
    pair = Pair()
    pair.client.send_headers(1, POST, end_stream=False)
    pair.client.send_headers(3, POST, end_stream=False)
    pair.to_server()
    pair.engine.receive(WindowUpdateFrame(1, window_increment=2**31 - 1).serialize())   # overflows the window
    assert pair.handler.calls[2:] == [("reset", 1, h2engine.FLOW_CONTROL_ERROR), ("closed", 1)]
    out = frames(pair.engine.pending())
    assert [(f.stream_id, f.error_code) for f in out if isinstance(f, RstStreamFrame)] == [(1, 3)]
    assert not pair.engine.closing and pair.engine.open_streams == 1


def test_data_after_the_request_ended_is_a_stream_error():
    pair = Pair()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.client.send_headers(3, GET, end_stream=True)
    pair.to_server()
    pair.engine.receive(DataFrame(1, data=b"late").serialize())
    assert pair.handler.calls[2:] == [("reset", 1, h2engine.STREAM_CLOSED), ("closed", 1)]
    hello(pair.engine, 3, None)
    out = frames(pair.engine.pending())
    assert [(f.stream_id, f.error_code) for f in out if isinstance(f, RstStreamFrame)] == [(1, 5)]
    assert sorted(f.stream_id for f in out if isinstance(f, DataFrame)) == [3] and not pair.engine.closing


def test_a_refused_request_with_a_body_is_stopped_after_its_431():
    pair = Pair()
    pair.pump()
    pair.handler.answer = lambda engine, sid, arg: engine.respond(sid, 431, [], True)
    pair.client.send_headers(1, POST + [(b"x-big", b"v" * 4000)] * 20, end_stream=False)
    pair.to_server()
    out = frames(pair.engine.pending())
    assert [type(f) for f in out] == [HeadersFrame, RstStreamFrame] and out[1].error_code == 0
    assert "END_STREAM" in out[0].flags and pair.engine.open_streams == 0
    assert pair.handler.calls == [("refused", 1, 431), ("closed", 1)]    # no body, no h2_reset: it ended well
    pair.client.send_data(1, b"in flight", end_stream=True)              # dropped
    pair.to_server()
    assert pair.handler.calls == [("refused", 1, 431), ("closed", 1)] and not pair.engine.closing
