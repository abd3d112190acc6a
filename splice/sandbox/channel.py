"""A framed channel over a stream socket: a 4-byte big-endian length, then the payload.

The child buffers frames and flushes them from a background thread, so the next step
does not wait for the parent to read a step's record. The parent treats every frame as
untrusted input.
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024  # large values travel as files, never as one frame


class ChannelError(Exception):
    """The peer broke the framing: an oversized frame or a truncated one."""


class FrameWriter:
    """Buffers frames and writes them in batches; safe to call from several threads.

    One background thread flushes the buffer every ``flush_after`` seconds. It can also
    read a second descriptor (``watch``) and hand what arrives to ``on_data``, so that the
    child needs no second thread for capturing its output.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        flush_after: float = 0.02,
        batch: int = 256 * 1024,
        watch: int | None = None,
        on_data: Callable[[bytes], None] | None = None,
    ):
        self._sock = sock
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._flush_after = flush_after
        self._batch = batch
        self._watch = watch
        self._on_data = on_data
        self._watch_lock = threading.Lock()
        self._closed = False
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._loop, name="frames", daemon=True)
        self._thread.start()

    def send(self, payload: bytes) -> None:
        if len(payload) > MAX_FRAME:
            raise ChannelError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
        with self._lock:
            self._buffer += HEADER.pack(len(payload))
            self._buffer += payload
            full = len(self._buffer) >= self._batch
        if full:
            self.flush()

    def flush(self) -> None:
        with self._send_lock:
            with self._lock:
                data, self._buffer = bytes(self._buffer), bytearray()
            if data:
                self._sock.sendall(data)

    def drain_watched(self, timeout: float) -> None:
        """Wait until everything written to the watched descriptor so far is handled.

        Gives up after ``timeout`` seconds, when a writer keeps writing.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._watch_lock:
                if self._watch is None or _pending_bytes(self._watch) == 0:
                    return
            time.sleep(0.001)

    def close(self) -> None:
        """Send what is buffered and stop the thread; the process is about to exit."""
        self._closed = True
        os.write(self._wake_write, b"x")
        self.flush()

    def _loop(self) -> None:
        while not self._closed:
            watched = [self._wake_read] + ([] if self._watch is None else [self._watch])
            ready, _, _ = select.select(watched, [], [], self._flush_after)
            if self._watch is not None and self._watch in ready:
                self._read_watched()
            try:
                self.flush()
            except OSError:
                return

    def _read_watched(self) -> None:
        with self._watch_lock:
            assert self._watch is not None
            data = os.read(self._watch, 64 * 1024)
            if data and self._on_data is not None:
                self._on_data(data)
            if not data:
                os.close(self._watch)
                self._watch = None


def _pending_bytes(fd: int) -> int:
    """Bytes waiting to be read from a pipe."""
    buffer = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buffer)
    return buffer[0]


def send_frame(sock: socket.socket, payload: bytes) -> None:
    """Write one frame at once, unbuffered."""
    sock.sendall(HEADER.pack(len(payload)) + payload)


def receive_frame(sock: socket.socket) -> bytes:
    """Read exactly one frame; raise ChannelError when the peer closes mid-frame."""
    header = _receive_exactly(sock, HEADER.size)
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ChannelError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    return _receive_exactly(sock, length)


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ChannelError(f"channel closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


class FrameReader:
    """Yields frames as they arrive until the peer closes or a deadline passes."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def frames(self, deadline: float) -> Iterator[bytes]:
        """Yield each whole frame; raise TimeoutError at ``deadline`` (a monotonic time)."""
        while True:
            yield from self._parse()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(1024 * 1024)
            except TimeoutError:
                raise
            if not chunk:
                if self._buffer:
                    raise ChannelError(f"channel closed inside a frame ({len(self._buffer)} bytes)")
                return
            self._buffer += chunk

    def _parse(self) -> Iterator[bytes]:
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, offset)
            if length > MAX_FRAME:
                raise ChannelError(f"frame of {length} bytes exceeds {MAX_FRAME}")
            end = offset + HEADER.size + length
            if len(buffer) < end:
                break
            yield bytes(buffer[offset + HEADER.size : end])
            offset = end
        if offset:
            del buffer[:offset]
