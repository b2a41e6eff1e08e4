"""Raw HTTP/2 frames at a proxy, for the HTTP/2 tests: `raw.py HOST:PORT` runs each case on a
connection of its own and prints one JSON object per case: the statuses answered, the
streams reset (and why), the GOAWAY (and why), whether the connection was closed.

Cases: independent streams (a stream whose window is never opened must not hold back
another), rapid reset (CVE-2023-44487), a CONTINUATION flood, a header list over the
limit, a request without :path, a connection-specific header, a PING flood, a flood of
empty DATA frames, and a reset of a stream waiting for its upstream. `raw.py HOST:PORT drain`
runs only the drain case: a request in flight while the caller makes the proxy drain.
"""
import json
import socket
import sys
import time

import hpack
from hyperframe import frame as F

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CODES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
         5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL",
         9: "COMPRESSION_ERROR", 11: "ENHANCE_YOUR_CALM"}


class Conn:
    def __init__(self, addr, window=None):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=5)
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.buf = b""
        self.statuses = {}
        self.resets = {}
        self.ended = set()
        self.goaway = None
        self.closed = False
        self.data = {}
        settings = F.SettingsFrame(0)
        if window is not None:
            settings.settings = {F.SettingsFrame.INITIAL_WINDOW_SIZE: window}
        self.send(PREFACE + settings.serialize())
        if window is not None:
            # The connection's window wide open: only the streams' own windows limit.
            self.send(F.WindowUpdateFrame(0, window_increment=64 << 20).serialize())

    def send(self, b):
        try:
            self.s.sendall(b)
        except OSError:
            self.closed = True

    def headers(self, sid, fields, end_stream=True, end_headers=True):
        f = F.HeadersFrame(sid)
        f.data = self.enc.encode(fields)
        f.flags.add("END_HEADERS") if end_headers else None
        if end_stream:
            f.flags.add("END_STREAM")
        return f.serialize()

    def get(self, sid, path="/", extra=()):
        return self.headers(sid, [(":method", "GET"), (":scheme", "http"),
                                  (":authority", "test"), (":path", path)] + list(extra))

    def pump(self, seconds, until=lambda c: False):
        end = time.time() + seconds
        while time.time() < end and not self.closed and not until(self):
            self.s.settimeout(max(0.01, end - time.time()))
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self.buf += chunk
            while len(self.buf) >= 9:
                f, length = F.Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) < 9 + length:
                    break
                f.parse_body(memoryview(self.buf[9:9 + length]))
                self.buf = self.buf[9 + length:]
                self.on(f)

    def on(self, f):
        if isinstance(f, F.SettingsFrame) and "ACK" not in f.flags:
            self.send(F.SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(f, F.HeadersFrame):
            for k, v in self.dec.decode(f.data):
                if k in (":status", b":status"):
                    self.statuses[f.stream_id] = int(v)
            if "END_STREAM" in f.flags:
                self.ended.add(f.stream_id)
        elif isinstance(f, F.DataFrame):
            self.data[f.stream_id] = self.data.get(f.stream_id, 0) + len(f.data)
            if "END_STREAM" in f.flags:
                self.ended.add(f.stream_id)
        elif isinstance(f, F.RstStreamFrame):
            self.resets[f.stream_id] = CODES.get(f.error_code, str(f.error_code))
        elif isinstance(f, F.GoAwayFrame):
            self.goaway = CODES.get(f.error_code, str(f.error_code))
        elif isinstance(f, F.PingFrame) and "ACK" not in f.flags:
            self.send(F.PingFrame(0, opaque_data=f.opaque_data, flags=["ACK"]).serialize())

    def report(self, case, **extra):
        out = {"case": case, "statuses": sorted(set(self.statuses.values())),
               "answered": len(self.statuses), "resets": sorted(set(self.resets.values())),
               "goaway": self.goaway, "closed": self.closed or self.goaway is not None}
        out.update(extra)
        return out


def independent(addr):
    c = Conn(addr, window=65535)
    c.send(c.get(1, "/big/4000000"))
    c.send(c.get(3, "/small"))
    c.pump(5, until=lambda c: 3 in c.ended)
    return c.report("independent streams", second_done=3 in c.ended,
                    first_held=c.data.get(1, 0) <= 65535)


def rapid_reset(addr):
    c = Conn(addr)
    burst = b""
    for i in range(1000):
        sid = 1 + 2 * i
        burst += c.get(sid, "/slow-rr") + F.RstStreamFrame(sid, error_code=8).serialize()
    c.send(burst)
    c.pump(4, until=lambda c: c.goaway is not None)
    return c.report("rapid reset")


def continuation_flood(addr):
    c = Conn(addr)
    c.send(c.headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "t"),
                         (":path", "/")], end_stream=True, end_headers=False))
    block = F.ContinuationFrame(1)
    block.data = c.enc.encode([("x-flood", "v" * 1000)])
    one = block.serialize()
    for _ in range(200):
        c.send(one * 50)
        if c.closed:
            break
    c.pump(3, until=lambda c: c.goaway is not None)
    return c.report("continuation flood")


def too_large(addr):
    c = Conn(addr)
    # 80 KB of fields (over the 60 KiB max_request_headers_kb), in frames of 16 KB.
    fields = [(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", "/")]
    block = c.enc.encode(fields + [("x-big-%d" % i, "v" * 4000) for i in range(20)])
    parts = [block[i:i + 16000] for i in range(0, len(block), 16000)]
    first = F.HeadersFrame(1)
    first.data = parts[0]
    first.flags.add("END_STREAM")
    out = first.serialize()
    for i, p in enumerate(parts[1:]):
        cont = F.ContinuationFrame(1)
        cont.data = p
        if i == len(parts) - 2:
            cont.flags.add("END_HEADERS")
        out += cont.serialize()
    c.send(out)
    c.pump(3, until=lambda c: 1 in c.ended or 1 in c.resets or c.goaway is not None)
    return c.report("header list over the limit")


def no_path(addr):
    c = Conn(addr)
    c.send(c.headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "t")]))
    c.pump(3, until=lambda c: 1 in c.ended or 1 in c.resets or c.goaway is not None)
    return c.report("request without :path")


def connection_header(addr):
    c = Conn(addr)
    c.send(c.get(1, "/", extra=[("connection", "keep-alive")]))
    c.pump(3, until=lambda c: 1 in c.ended or 1 in c.resets or c.goaway is not None)
    return c.report("connection-specific header")


def ping_flood(addr):
    c = Conn(addr)
    ping = F.PingFrame(0, opaque_data=b"12345678").serialize()
    # Pings sent without reading the answers, then one request: still served?
    for _ in range(100):
        c.send(ping * 100)
    c.send(c.get(1, "/after-pings"))
    c.pump(4, until=lambda c: 1 in c.ended or c.goaway is not None)
    return c.report("ping flood")


def empty_data(addr):
    c = Conn(addr)
    c.send(c.headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "t"),
                         (":path", "/empty")], end_stream=False))
    empty = F.DataFrame(1).serialize()
    for _ in range(100):
        c.send(empty * 100)
    end = F.DataFrame(1, flags=["END_STREAM"]).serialize()
    c.send(end)
    c.pump(3, until=lambda c: 1 in c.ended or 1 in c.resets or c.goaway is not None)
    return c.report("empty DATA flood")


def reset_waiting(addr):
    c = Conn(addr)
    c.send(c.get(1, "/slow-reset"))
    time.sleep(0.3)
    c.send(F.RstStreamFrame(1, error_code=8).serialize())
    c.send(c.get(3, "/after-reset"))
    c.pump(3, until=lambda c: 3 in c.ended)
    return c.report("reset while waiting", next_answered=3 in c.ended)


def drain(addr):
    """A request in flight while the proxy drains (the caller signals it): GOAWAY, and the
    request still answered."""
    c = Conn(addr)
    c.send(c.get(1, "/slow-drain"))
    c.pump(8, until=lambda c: 1 in c.ended)
    c.pump(1)
    return c.report("drain", first_done=1 in c.ended)


if __name__ == "__main__":
    addr = sys.argv[1]
    only = sys.argv[2:]
    for f in (independent, rapid_reset, continuation_flood, too_large, no_path,
              connection_header, ping_flood, empty_data, reset_waiting, drain):
        if f is drain and "drain" not in only:
            continue
        if only and f.__name__ not in only:
            continue
        print(json.dumps(f(addr), sort_keys=True), flush=True)
