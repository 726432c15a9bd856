"""Loopback ports, and a forwarder that answers late."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LateForwarder:
    """A database address that refuses connections until ``after_s`` seconds have passed, then
    forwards each connection to ``target``: a paused Aurora Serverless v2 cluster, resuming.
    Loopback only; ``close()`` stops it and every connection it forwards."""

    def __init__(self, target: tuple[str, int], after_s: float) -> None:
        import threading

        self.target, self.port = target, free_port()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._starter = threading.Timer(after_s, self._listen)
        self._starter.daemon = True
        self._starter.start()

    def _listen(self) -> None:
        import threading

        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.2)
        self._sockets.append(listener)

        def accept() -> None:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                upstream = socket.create_connection(self.target)
                self._sockets += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    def close(self) -> None:
        self._starter.cancel()
        self._stop.set()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
