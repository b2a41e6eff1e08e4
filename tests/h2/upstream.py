"""An HTTP/2 (h2c) upstream for the HTTP/2 upstream tests, on PyPI h2's sans-I/O state machine.

`upstream.py refuse` refuses (RST_STREAM REFUSED_STREAM) every stream whose path contains
`refused`, and the first `/retry/once` of each connection; it answers the others 200 `ok`
(with `x-stream: N`, the stream's number on its connection). Prints its port on the first
line; serves until stdin closes.
"""
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events
import h2.errors

MODE = sys.argv[1]


def serve(sock):
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    seen = 0
    once = [False]
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    seen += 1
                    sid = ev.stream_id
                    path = dict((k.decode() if isinstance(k, bytes) else k,
                                 v.decode() if isinstance(v, bytes) else v)
                                for k, v in ev.headers).get(":path", "")
                    if "refused" in path or (path == "/retry/once" and not once[0]):
                        if path == "/retry/once":
                            once[0] = True
                        conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
                        continue
                    conn.send_headers(sid, [(":status", "200"), ("content-length", "2"),
                                            ("x-stream", str(seen))])
                    conn.send_data(sid, b"ok", end_stream=True)
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    except OSError:
        return


def main():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    print(s.getsockname()[1], flush=True)

    def accept():
        while True:
            c, _ = s.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    sys.stdin.read()


main()
