"""A fast SMTP sink as its own process, for load and chaos runs: it keeps no message, only
a line per delivered transaction.

Usage: python -m tests.servers.counting_sink --port 25 --out FILE ADDRESS [ADDRESS ...]

Listens on every ADDRESS at one port (the fleet's delivery port), answers ESMTP with
PIPELINING, reads DATA up to <CRLF>.<CRLF> (RFC 5321 §4.1.1.4) in large reads and removes
dot-stuffing (§4.5.2). For each transaction it appends one line to FILE and flushes it:

    <unix time> <sink address> <X-Chaos-Id> <sha256> <rcpt>,<rcpt>...

where the hash covers the message as received minus the one ``Received:`` field the relay
prepends (RFC 5321 §4.4): what the original client sent, byte for byte. A message
without ``X-Chaos-Id`` is recorded with ``-``. SIGTERM ends it.
"""

import argparse
import asyncio
import hashlib
import re
import signal
import time
from typing import IO

_ID = re.compile(rb"^X-Chaos-Id: *(\S+)", re.MULTILINE | re.IGNORECASE)
_LIMIT = 8 << 20  # largest line or message the reader buffers


def original(received: bytes) -> bytes:
    """The message minus the first ``Received:`` field and its folded lines."""
    if not received.startswith(b"Received:"):
        return received
    end = received.find(b"\r\n")
    while end >= 0 and received[end + 2 : end + 3] in (b" ", b"\t"):
        end = received.find(b"\r\n", end + 2)
    return received[end + 2 :] if end >= 0 else b""


def unstuff(data: bytes) -> bytes:
    data = data.replace(b"\r\n..", b"\r\n.")
    return data[1:] if data.startswith(b"..") else data


class Buffered:
    """Lines and DATA out of large reads; what is read ahead stays for the next call."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buf = bytearray()

    async def _until(self, marker: bytes, start: int = 0) -> int:
        while (found := self.buf.find(marker, start)) < 0:
            if len(self.buf) > _LIMIT:
                raise ConnectionError("line or message too long")
            chunk = await self.reader.read(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        return found

    async def line(self) -> bytes:
        end = await self._until(b"\n") + 1
        line = bytes(self.buf[:end])
        del self.buf[:end]
        return line

    async def data(self) -> bytes:
        """Up to <CRLF>.<CRLF>, the line ending before the dot included; the DATA line's
        CRLF counts as the first CRLF, so an empty message is just ".<CRLF>"."""
        self.buf[:0] = b"\r\n"
        end = await self._until(b"\r\n.\r\n")
        data = bytes(self.buf[2 : end + 2])
        del self.buf[: end + 5]
        return data


class Sink:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def record(self, address: str, rcpts: list[bytes], data: bytes) -> None:
        message = original(unstuff(data))
        header = message[: message.find(b"\r\n\r\n")]
        found = _ID.search(header)
        chaos_id = found.group(1).decode() if found else "-"
        digest = hashlib.sha256(message).hexdigest()
        recipients = b",".join(rcpts).decode("utf-8", "replace")
        self.out.write(f"{time.time():.3f} {address} {chaos_id} {digest} {recipients}\n")
        self.out.flush()

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("sockname")[0]
        try:
            await self._serve(address, Buffered(reader), writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _serve(self, address: str, reader: Buffered, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        rcpts: list[bytes] = []
        while True:
            line = await reader.line()
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n")
            elif verb == b"MAIL":
                rcpts = []
                writer.write(b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                rcpts.append(line[line.find(b"<") + 1 : line.rfind(b">")])
                writer.write(b"250 2.1.5 ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go\r\n")
                await writer.drain()
                self.record(address, rcpts, await reader.data())
                writer.write(b"250 2.0.0 kept\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                return
            else:  # RSET, NOOP and anything else
                writer.write(b"250 2.0.0 ok\r\n")
            if not reader.buf:  # answer a pipelined group once it is all read
                await writer.drain()


async def serve(addresses: list[str], port: int, out: IO[str]) -> None:
    sink = Sink(out)
    servers = [
        await asyncio.start_server(sink.session, address, port, limit=_LIMIT)
        for address in addresses
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"counting_sink: listening on {','.join(addresses)} port {port}", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("addresses", nargs="+")
    args = ap.parse_args()
    with open(args.out, "a", encoding="utf-8") as out:
        asyncio.run(serve(args.addresses, args.port, out))


if __name__ == "__main__":
    main()
