"""Open N keep-alive connections to 127.0.0.1:PORT, send one request on each, read its
answer, and keep them open (idle) for a memory measurement. Bounded in time."""

import selectors
import socket
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
BATCH = 500


def open_idle(port, n, timeout_s=60.0):
    """Return (sockets that got an answer, failures). The caller closes the sockets."""
    deadline = time.monotonic() + timeout_s
    held, failures = [], 0
    while len(held) + failures < n and time.monotonic() < deadline:
        batch = min(BATCH, n - len(held) - failures)
        ok, bad = _batch(port, batch, deadline)
        held += ok
        failures += bad
    return held, failures + max(0, n - len(held) - failures)


def _batch(port, n, deadline):
    sel = selectors.DefaultSelector()
    pending = {}
    failures = 0
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect_ex(("127.0.0.1", port))
        except OSError:
            s.close()
            failures += 1
            continue
        pending[s] = b""
        sel.register(s, selectors.EVENT_WRITE)
    done = []
    while pending and time.monotonic() < deadline:
        for key, mask in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                if mask & selectors.EVENT_WRITE:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                        raise OSError("connect failed")
                    s.sendall(REQUEST)
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                data = s.recv(65536)
                if not data:
                    raise OSError("closed")
                pending[s] += data
                if b"\r\n\r\n" in pending[s]:
                    sel.unregister(s)
                    del pending[s]
                    done.append(s)
            except OSError:
                sel.unregister(s)
                del pending[s]
                s.close()
                failures += 1
    for s in pending:
        s.close()
    sel.close()
    return done, failures + len(pending)


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
