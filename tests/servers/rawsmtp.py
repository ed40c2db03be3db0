"""A raw SMTP client for protocol tests: sends exact bytes, reads whole replies."""

import contextlib
import socket
import ssl
from types import TracebackType


class Closed(ConnectionError):
    """The server closed the connection."""


class RawSMTP:
    """One TCP connection; ``cmd`` sends a line and returns (code, text-lines)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        source: str | None = None,
        timeout: float = 10.0,
        read_greeting: bool = True,
    ) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        # Each write leaves at once: without this, the final "." after the data waits for
        # the server's delayed ACK (Nagle), 40 ms per message.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        self.greeting = self.reply() if read_greeting else None

    def __enter__(self) -> "RawSMTP":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(f"connection closed; unread: {self._buf!r}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def reply(self) -> tuple[int, str]:
        """One reply, multi-line joined with newlines: (code, text after the code)."""
        lines = []
        while True:
            line = self._line()
            assert line[:3].isdigit(), f"malformed reply line {line!r}"
            lines.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, line: str | bytes) -> tuple[int, str]:
        data = line.encode() if isinstance(line, str) else line
        self.send(data + b"\r\n")
        return self.reply()

    def starttls(self, context: ssl.SSLContext, server_hostname: str = "localhost") -> None:
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection within ``timeout`` (data is drained)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self._buf += chunk
        except TimeoutError:
            return False
        except OSError:
            return True

    def transaction(
        self, sender: str, recipients: list[str], body: bytes, *, ehlo: bool = True
    ) -> tuple[int, str]:
        """EHLO, MAIL, RCPT..., DATA with ``body`` as wire data (already dot-stuffed).

        Returns the reply to the final dot, or the refusal of DATA itself.
        """
        if ehlo:
            assert self.cmd("EHLO client.test")[0] == 250
        code, text = self.cmd(f"MAIL FROM:<{sender}>")
        assert code == 250, (code, text)
        for rcpt in recipients:
            code, text = self.cmd(f"RCPT TO:<{rcpt}>")
            assert code == 250, (code, text)
        code, text = self.cmd("DATA")
        if code != 354:
            return code, text
        self.send(body if body.endswith(b"\r\n") else body + b"\r\n")
        return self.cmd(b".")
