"""A fast SMTP sender for backlogs: many messages per session, pipelined as RFC 2920 §3.1
allows (the message data, its final dot and the next MAIL, RCPT and DATA go in one write),
so a message costs one round trip; several sessions run in threads.
"""

import threading
from collections.abc import Callable, Sequence

from tests.servers.rawsmtp import RawSMTP

Message = tuple[str, list[str], bytes]  # sender, recipients, data (CRLF lines, no dot lines)


def _envelope(message: Message) -> bytes:
    sender, recipients, _ = message
    lines = [f"MAIL FROM:<{sender}>", *(f"RCPT TO:<{rcpt}>" for rcpt in recipients), "DATA"]
    return "".join(line + "\r\n" for line in lines).encode()


def _envelope_replies(smtp: RawSMTP, message: Message) -> None:
    for _ in range(1 + len(message[1])):
        code, text = smtp.reply()
        assert code == 250, (code, text)
    code, text = smtp.reply()
    assert code == 354, (code, text)


def send_session(host: str, port: int, messages: Sequence[Message]) -> list[str]:
    """Send ``messages`` over one session; the reply text to each final dot (each must be
    a 250: an assertion names the first that is not)."""
    answers: list[str] = []
    if not messages:
        return answers
    with RawSMTP(host, port, timeout=60) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        smtp.send(_envelope(messages[0]))
        _envelope_replies(smtp, messages[0])
        for index, message in enumerate(messages):
            following = messages[index + 1] if index + 1 < len(messages) else None
            assert b"\r\n." not in b"\r\n" + message[2], "dot-stuff the data first"
            smtp.send(message[2] + b".\r\n" + (_envelope(following) if following else b""))
            code, text = smtp.reply()
            assert code == 250, (index, code, text)
            answers.append(text)
            if following is not None:
                _envelope_replies(smtp, following)
        smtp.cmd("QUIT")
    return answers


def send_parallel(
    host: str, port: int, count: int, sessions: int, make: Callable[[int], Message]
) -> int:
    """``count`` messages ``make(0) .. make(count - 1)`` over ``sessions`` sessions in
    threads; the number accepted (all of them, or an AssertionError from a session)."""
    accepted = [0] * sessions
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        try:
            mine = [make(n) for n in range(slot, count, sessions)]
            accepted[slot] = len(send_session(host, port, mine))
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(accepted)
