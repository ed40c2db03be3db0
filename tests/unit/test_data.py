"""ingress/data.py: end of data, dot-stuffing, bare CR/LF (normalised or refused), limits."""

import re
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress.data import DataReader, Received
from shared import replies
from shared.settings import BareNewlines
from tests.unit.fuzz import FUZZ
from workers.smtp_wire import data_payload

BIG = 10 * 1024 * 1024
LINE = 1000  # RFC 5321 §4.5.3.1.6
END = b"\r\n.\r\n"
SMUGGLERS = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r.\r\n", b"\n.\r", b"\r\n.\r"]

# A line of message content: anything but CR and LF, often starting with a dot.
line_st = st.one_of(
    st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"", b".", b"..", b".x", b"...", b". ", b"From x", b"\x00", b"\xff"]),
)
lines_st = st.lists(line_st, max_size=15)
cuts_st = st.lists(st.integers(min_value=0), max_size=12)


def stuff(lines: list[bytes]) -> bytes:
    """RFC 5321 §4.5.2: CRLF lines, a line starting with a period gets one more."""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def body_of(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the positions ``cuts`` (taken modulo its length); may hold empty chunks."""
    bounds = [0, *sorted({cut % (len(data) + 1) for cut in cuts}), len(data)]
    return [data[start:stop] for start, stop in pairwise(bounds)]


def feed_all(reader: DataReader, chunks: list[bytes]) -> tuple[Received | None, bytes]:
    """Feed chunks until the reader completes: its result and every byte it did not consume."""
    for index, chunk in enumerate(chunks):
        result = reader.feed(chunk)
        if result is not None:
            return result, reader.leftover + b"".join(chunks[index + 1 :])
    return None, b""


# --- exact outcomes -----------------------------------------------------------------------


def test_simple_message() -> None:
    reader = DataReader(BIG, LINE)
    result = reader.feed(b"Subject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n")
    assert result == Received(b"Subject: hi\r\n\r\nhello\r\n", None, 22)
    assert reader.leftover == b"QUIT\r\n"


def test_empty_message() -> None:
    reader = DataReader(BIG, LINE)
    assert reader.feed(b".\r\n") == Received(b"", None, 0)
    assert reader.leftover == b""


def test_first_line_empty() -> None:
    reader = DataReader(BIG, LINE)
    assert reader.feed(b"\r\n.\r\n") == Received(b"\r\n", None, 2)


def test_incomplete_data_returns_none() -> None:
    reader = DataReader(BIG, LINE)
    assert reader.feed(b"hello\r\n") is None
    assert reader.feed(b".") is None
    assert reader.feed(b"\r") is None
    assert reader.feed(b"\n") == Received(b"hello\r\n", None, 7)


def test_dot_stuffing_is_undone() -> None:
    reader = DataReader(BIG, LINE)
    result = reader.feed(b"..\r\n...x\r\n.a\r\nb.\r\n.\r\n")
    assert result == Received(b".\r\n..x\r\na\r\nb.\r\n", None, 18)


def test_only_crlf_dot_crlf_ends_the_data() -> None:
    reader = DataReader(BIG, LINE)
    assert reader.feed(b"a\r\n.x\r\n..\r\n. \r\n") is None
    assert reader.feed(b".\r\n") == Received(b"a\r\nx\r\n.\r\n \r\n", None, 15)


@pytest.mark.parametrize("smuggler", SMUGGLERS)
def test_smuggling_sequence_does_not_end_the_data(smuggler: bytes) -> None:
    # CVE-2023-51764 family: a second transaction hidden behind a bare-LF/CR "end of data".
    second = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nspoof\r\n"
    reader = DataReader(BIG, LINE, "reject")
    assert reader.feed(b"Subject: a\r\n\r\nhello" + smuggler + second) is None
    result = reader.feed(b".\r\nQUIT\r\n")
    assert result is not None
    assert result.error == replies.BARE_NEWLINE
    assert result.body == b""
    assert reader.leftover == b"QUIT\r\n"


@pytest.mark.parametrize(
    "data",
    [b"a\nb\r\n", b"a\rb\r\n", b"a\r\r\n", b"a\r\n\nb\r\n", b"\n\r\n", b"\r\r\n", b"\ra\r\n"],
)
def test_bare_cr_or_lf_refuses_the_message(data: bytes) -> None:
    reader = DataReader(BIG, LINE, "reject")
    assert reader.feed(data + b".\r\n") == Received(b"", replies.BARE_NEWLINE, len(data))


def test_size_limit_exact() -> None:
    assert DataReader(5, LINE).feed(b"abc\r\n.\r\n") == Received(b"abc\r\n", None, 5)
    too_big = DataReader(4, LINE).feed(b"abc\r\n.\r\n")
    assert too_big == Received(b"", replies.MESSAGE_TOO_BIG, 5)


def test_line_limit_exact() -> None:
    ok = b"x" * (LINE - 2) + b"\r\n"  # 1000 octets with the CRLF
    assert DataReader(BIG, LINE).feed(ok + b".\r\n") == Received(ok, None, LINE)
    long = b"x" * (LINE - 1) + b"\r\n"
    assert DataReader(BIG, LINE).feed(long + b".\r\n") == Received(
        b"", replies.LINE_TOO_LONG_DATA, LINE + 1
    )


def test_line_limit_does_not_count_the_stuffing_dot() -> None:
    # RFC 5321 §4.5.3.1.6: 1000 octets "not counting the leading dot duplicated for
    # transparency".
    line = b"." + b"x" * (LINE - 3)
    result = DataReader(BIG, LINE).feed(b"." + line + b"\r\n.\r\n")
    assert result == Received(line + b"\r\n", None, LINE + 1)


def test_long_line_among_short_ones_is_refused() -> None:
    data = b"a\r\n" * 500 + b"y" * LINE + b"\r\nb\r\n"
    result = DataReader(BIG, LINE).feed(data + b".\r\n")
    assert result == Received(b"", replies.LINE_TOO_LONG_DATA, len(data))


def test_past_the_limit_the_buffer_stays_bounded() -> None:
    reader = DataReader(1000, LINE)
    chunk = b"x" * 510 + b"\r\n"
    for count in range(1, 2001):  # ~1 MiB, a thousand times the limit
        assert reader.feed(chunk) is None
        if count * len(chunk) > 1000 * 4 // 3 + 4:  # the wire bound of a 1000-byte message
            assert len(reader._buf) <= len(END)
    result = reader.feed(b".\r\nQUIT\r\n")
    assert result == Received(b"", replies.MESSAGE_TOO_BIG, 2000 * len(chunk))
    assert reader.leftover == b"QUIT\r\n"


def test_past_the_limit_the_end_is_found_byte_by_byte() -> None:
    reader = DataReader(10, LINE)
    assert reader.feed(b"y" * 100) is None
    for byte in b"\r\n.\r":
        assert reader.feed(bytes([byte])) is None
        assert len(reader._buf) <= len(END)
    assert reader.feed(b"\n") == Received(b"", replies.MESSAGE_TOO_BIG, 102)


@pytest.mark.parametrize("mode", ["normalize", "reject"])
def test_oversized_message_with_bare_lf_is_still_refused(mode: BareNewlines) -> None:
    reader = DataReader(10, LINE, mode)
    assert reader.feed(b"z" * 50 + b"\n.\n" + b"z" * 50) is None
    result = reader.feed(b"\r\n.\r\n")
    assert result is not None
    assert result.error in (replies.MESSAGE_TOO_BIG, replies.BARE_NEWLINE)
    assert result.body == b""


@pytest.mark.parametrize("cut", range(len(b"12345678\r\n.\r\n") + 1))
def test_message_at_the_limit_is_accepted_wherever_the_chunk_boundary_falls(cut: int) -> None:
    message = b"12345678\r\n"  # exactly max_size octets
    wire = message + b".\r\n"
    reader = DataReader(len(message), LINE)
    result, rest = feed_all(reader, [wire[:cut], wire[cut:]])
    assert result == Received(message, None, len(message))
    assert rest == b""


def test_size_limit_does_not_count_stuffing_dots() -> None:
    # RFC 1870: the message size excludes "the SMTP DATA command's terminating dot or doubled
    # quoting dots"; a client that declared SIZE=10 for this 10-octet message is within it.
    message = b".2345678\r\n"
    result = DataReader(len(message), LINE).feed(b"." + message + b".\r\n")
    assert result is not None
    assert result.error is None
    assert result.body == message


# --- properties ---------------------------------------------------------------------------


@FUZZ
@given(lines_st, st.binary(max_size=40))
def test_dot_stuffing_round_trip(lines: list[bytes], trailing: bytes) -> None:
    wire = stuff(lines)
    reader = DataReader(BIG, LINE)
    assert reader.feed(wire + b".\r\n" + trailing) == Received(body_of(lines), None, len(wire))
    assert reader.leftover == trailing


@FUZZ
@given(lines_st, st.binary(max_size=40), cuts_st)
def test_any_chunking_gives_the_same_body_and_leftover(
    lines: list[bytes], trailing: bytes, cuts: list[int]
) -> None:
    wire = stuff(lines) + b".\r\n" + trailing
    result, rest = feed_all(DataReader(BIG, LINE), chunked(wire, cuts))
    assert result == Received(body_of(lines), None, len(stuff(lines)))
    assert rest == trailing


@FUZZ
@given(lines_st, st.integers(min_value=-4, max_value=4), cuts_st)
def test_size_limit_is_the_same_whatever_the_chunking(
    lines: list[bytes], delta: int, cuts: list[int]
) -> None:
    # RFC 1870: the size is the message's, without the doubled quoting dots.
    stuffed = stuff(lines)
    size = len(body_of(lines))
    max_size = max(1, size + delta)
    wire = stuffed + b".\r\nNOOP\r\n"
    whole = DataReader(max_size, LINE)
    expected = whole.feed(wire)
    assert expected is not None
    assert whole.leftover == b"NOOP\r\n"
    assert expected.wire_size == len(stuffed)
    assert expected.error == (replies.MESSAGE_TOO_BIG if size > max_size else None)
    result, rest = feed_all(DataReader(max_size, LINE), chunked(wire, cuts))
    assert result == expected
    assert rest == b"NOOP\r\n"


@FUZZ
@given(st.integers(min_value=1, max_value=300), st.lists(st.integers(0, 700), max_size=40))
def test_buffer_bounded_whatever_the_chunk_sizes(max_size: int, sizes: list[int]) -> None:
    reader = DataReader(max_size, LINE)
    fed = 0
    for size in sizes:
        assert reader.feed(b"a" * size) is None
        fed += size
        wire_bound = max_size * 4 // 3 + 4  # dot-stuffing makes at most 4/3 of a message
        if fed > wire_bound:
            assert len(reader._buf) <= len(END)
        else:
            assert len(reader._buf) <= wire_bound + 2
    result = reader.feed(END)
    assert result is not None
    assert result.wire_size == fed + 2
    assert result.error == (replies.MESSAGE_TOO_BIG if fed + 2 > max_size else None)


@FUZZ
@given(lines_st, st.sampled_from([b"\r", b"\n", *SMUGGLERS]), st.integers(min_value=0), cuts_st)
def test_a_bare_cr_or_lf_anywhere_is_never_accepted(
    lines: list[bytes], bare: bytes, where: int, cuts: list[int]
) -> None:
    stuffed = stuff(lines)
    if len(bare) == 1:  # anywhere but inside a CRLF (that would make "\r\r\n", still bare)
        at = where % (len(stuffed) + 1)
        if stuffed[at - 1 : at] == b"\r":
            at -= 1
    else:  # at a line start: inside a line, "." + "\r\n.\n" would be a real end of data
        starts = [0, *(i + 2 for i in range(len(stuffed)) if stuffed.startswith(b"\r\n", i))]
        at = starts[where % len(starts)]
    # The trailing END guarantees an end of data even when the insertion broke the first one.
    wire = stuffed[:at] + bare + stuffed[at:] + b".\r\n" + END
    result, _ = feed_all(DataReader(BIG, LINE, "reject"), chunked(wire, cuts))
    assert result is not None
    assert result.error == replies.BARE_NEWLINE
    assert result.body == b""


TOKENS = [
    b"a", b"Subject: x", b".", b"..", b" ", b"\r\n", b"\r", b"\n", b"\n.", b"\r.",
    b"MAIL FROM:<e@example.com>", *SMUGGLERS,
]  # fmt: skip
tokens_st = st.lists(st.sampled_from(TOKENS), max_size=30)


def normalised_message(content: bytes) -> bytes:
    """What ``normalize`` makes of the data before the final dot, line by line: every CRLF,
    bare CR and bare LF ends a line; a quoting dot goes (RFC 5321 §4.5.2), but a lone "."
    is a line of text (only a bare CR or LF can make one: <CRLF>.<CRLF> ends the data)."""
    lines = re.split(rb"\r\n|\r|\n", content)[:-1]  # content ends with a line end
    unstuffed = (line[1:] if line.startswith(b".") and line != b"." else line for line in lines)
    return b"".join(line + b"\r\n" for line in unstuffed)


@FUZZ
@pytest.mark.parametrize("mode", ["normalize", "reject"])
@given(tokens_st, st.binary(max_size=20), cuts_st)
def test_data_ends_exactly_at_the_first_crlf_dot_crlf(
    mode: BareNewlines, tokens: list[bytes], trailing: bytes, cuts: list[int]
) -> None:
    wire = b"".join(tokens) + END + trailing
    framed = b"\r\n" + wire  # the CRLF before the first line (RFC 5321 §4.1.1.4)
    end = framed.find(END)
    content = framed[2 : end + 2]
    crlf = content.count(b"\r\n")
    bare = content.count(b"\r") != crlf or content.count(b"\n") != crlf
    result, rest = feed_all(DataReader(BIG, LINE, mode), chunked(wire, cuts))
    assert rest == framed[end + 5 :]
    assert result is not None
    assert result.wire_size == len(content)
    if bare and mode == "reject":
        assert result == Received(b"", replies.BARE_NEWLINE, len(content))
    else:
        assert result.error is None
        assert result.body == normalised_message(content)
        if not bare:
            assert result.body == content.replace(b"\r\n.", b"\r\n").removeprefix(b".")


# --- normalize: bare CR and LF become CRLF -------------------------------------------------


@pytest.mark.parametrize(
    ("data", "body"),
    [
        (b"Subject: unix\n\nline\r\n", b"Subject: unix\r\n\r\nline\r\n"),
        (b"a\rb\r\n", b"a\r\nb\r\n"),
        (b"a\r\r\n", b"a\r\n\r\n"),
        (b"a\n\rb\r\n", b"a\r\n\r\nb\r\n"),
        (b"\n\r\n", b"\r\n\r\n"),
        (b"..x\n..\n.y\r\n", b".x\r\n.\r\ny\r\n"),  # quoting dots go, as on CRLF lines
        (b"a\n.\nb\r\n", b"a\r\n.\r\nb\r\n"),  # a lone "." stays: it did not end the data
        (b".\n\r\n", b".\r\n\r\n"),
        (b"a\r\n.\r\r\nb\r\n", b"a\r\n.\r\n\r\nb\r\n"),
    ],
)
def test_bare_cr_and_lf_are_normalised(data: bytes, body: bytes) -> None:
    reader = DataReader(BIG, LINE)
    assert reader.feed(data + b".\r\nQUIT\r\n") == Received(body, None, len(data))
    assert reader.leftover == b"QUIT\r\n"


@pytest.mark.parametrize("smuggler", SMUGGLERS)
def test_smuggling_sequence_is_text_of_one_message(smuggler: bytes) -> None:
    second = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nspoof\r\n"
    reader = DataReader(BIG, LINE)
    assert reader.feed(b"Subject: a\r\n\r\nhello" + smuggler + second) is None
    result = reader.feed(b".\r\nQUIT\r\n")
    assert result is not None
    assert result.error is None
    assert result.body == b"Subject: a\r\n\r\nhello\r\n.\r\n" + second
    assert reader.leftover == b"QUIT\r\n"


@FUZZ
@given(tokens_st, st.integers(min_value=1, max_value=400), cuts_st)
def test_size_limit_counts_the_normalised_message(
    tokens: list[bytes], max_size: int, cuts: list[int]
) -> None:
    wire = b"".join(tokens) + END
    framed = b"\r\n" + wire  # the data ends at the first END, maybe one the tokens made
    content = framed[2 : framed.find(END) + 2]
    message = normalised_message(content)
    result, _ = feed_all(DataReader(max_size, LINE), chunked(wire, cuts))
    assert result is not None
    if len(message) > max_size:
        assert result == Received(b"", replies.MESSAGE_TOO_BIG, len(content))
    else:
        assert result == Received(message, None, len(content))


@FUZZ
@given(tokens_st, cuts_st)
def test_a_normalised_message_is_relayed_as_it_was_stored(
    tokens: list[bytes], cuts: list[int]
) -> None:
    # The worker's dot-stuffing (workers/smtp_wire.py) of a stored message gives wire data
    # with no bare CR or LF and no early end, which a strict server reads back unchanged.
    stored = DataReader(BIG, LINE).feed(b"".join(tokens) + END)
    assert stored is not None
    assert stored.error is None
    payload = data_payload(stored.body)
    relayed, rest = feed_all(DataReader(BIG, LINE, "reject"), chunked(payload, cuts))
    assert relayed is not None
    assert (relayed.body, relayed.error, rest) == (stored.body, None, b"")
