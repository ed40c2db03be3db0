"""How a real ingress classifies mail: the X-Mxfleet-Priority header (taken out of the
stored message), the AUTH user mapping, the default, and refusals of unknown classes."""

import base64
from pathlib import Path

import pytest

from shared import replies
from shared.passwords import hash_password
from tests.conftest import StartIngress
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtpcheck import body, envelope, queued_id, stored_ids, wire
from tests.servers.spool_client import SpoolClient

OUTSIDER = "127.0.0.2"  # not in the test relay_networks (127.0.0.1/32): must AUTH to relay
PASSWORD = "correct horse battery staple"
RESET = (
    b"From: <app@client.test>\r\nX-Mxfleet-Priority: transactional\r\nSubject: password reset\r\n"
    b"x-mxfleet-priority:\r\n transactional\r\n\r\nyour code is 123456\r\n"
)


@pytest.fixture
def classified(start_ingress: StartIngress, spool: SpoolClient, tmp_path: Path) -> IngressProcess:
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "".join(f"{user}:{hash_password(PASSWORD, ln=10)}\n" for user in ("app-reset", "news"))
    )
    return start_ingress(
        auth_file=credentials, auth_require_tls="false", transactional_users="app-reset"
    )


def send(ingress: IngressProcess, message: bytes, user: str = "") -> tuple[int, str]:
    source = OUTSIDER if user else None
    with RawSMTP(ingress.host, ingress.port, source=source) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        if user:
            token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
            assert smtp.cmd(f"AUTH PLAIN {token}") == wire(replies.AUTH_OK)
        return smtp.transaction("s@example.test", ["r@dest.test"], message, ehlo=False)


def stored_class(spool: SpoolClient, msg_id: str) -> tuple[str, bytes | None, set[bytes]]:
    """The envelope's class, the job's class and the schedules holding the job."""
    found = {
        key
        for key in (b"mxf:sched:dest.test", b"mxf:sched:dest.test:t")
        if spool.zscore(key.decode(), msg_id) is not None
    }
    return (
        envelope(spool, msg_id)["priority"],
        spool.hget(f"mxf:job:{msg_id}:dest.test", "prio"),
        found,
    )


def test_the_header_sets_the_class_and_is_taken_out(
    classified: IngressProcess, spool: SpoolClient
) -> None:
    code, text = send(classified, RESET)
    assert code == 250, text
    msg_id = queued_id(text)
    stored = body(spool, msg_id)
    assert b"priority" not in stored.lower()  # both fields, the folded line too
    # The client's other fields in their order, then what the ingress adds when missing.
    assert b"\r\nFrom: <app@client.test>\r\nSubject: password reset\r\nMessage-ID: " in stored
    assert stored.endswith(b"\r\n\r\nyour code is 123456\r\n")
    assert stored_class(spool, msg_id) == (
        "transactional", b"transactional", {b"mxf:sched:dest.test:t"}
    )  # fmt: skip


def test_without_a_header_mail_is_bulk(classified: IngressProcess, spool: SpoolClient) -> None:
    code, text = send(classified, b"Subject: news\r\n\r\nweekly\r\n")
    assert code == 250, text
    assert stored_class(spool, queued_id(text)) == ("bulk", b"bulk", {b"mxf:sched:dest.test"})


def test_the_auth_user_mapping_and_the_header_above_it(
    classified: IngressProcess, spool: SpoolClient
) -> None:
    plain = b"Subject: reset\r\n\r\ncode\r\n"
    mapped = queued_id(send(classified, plain, user="app-reset")[1])
    other = queued_id(send(classified, plain, user="news")[1])
    demoted = queued_id(send(classified, b"X-Mxfleet-Priority: bulk\r\n" + plain,
                             user="app-reset")[1])  # fmt: skip
    promoted = queued_id(send(classified, RESET, user="news")[1])
    assert [stored_class(spool, i)[0] for i in (mapped, other, demoted, promoted)] == [
        "transactional", "bulk", "bulk", "transactional"
    ]  # fmt: skip
    assert envelope(spool, mapped)["auth"] == "app-reset"


def test_an_unknown_class_is_refused_and_nothing_stored(
    classified: IngressProcess, spool: SpoolClient
) -> None:
    with RawSMTP(classified.host, classified.port) as smtp:
        refused = smtp.transaction(
            "s@example.test", ["r@dest.test"], b"X-Mxfleet-Priority: urgent\r\n\r\nx\r\n"
        )
        assert refused == wire(replies.PRIORITY_HEADER_INVALID)
        contradictory = (
            b"X-Mxfleet-Priority: bulk\r\nX-Mxfleet-Priority: transactional\r\n\r\nx\r\n"
        )
        assert smtp.transaction("s@example.test", ["r@dest.test"], contradictory,
                                ehlo=False) == wire(replies.PRIORITY_HEADER_INVALID)  # fmt: skip
        assert stored_ids(spool) == set()
        code, text = smtp.transaction("s@example.test", ["r@dest.test"], RESET, ehlo=False)
        assert code == 250, text  # the session goes on
    assert stored_ids(spool) == {queued_id(text)}


def test_with_the_header_off_it_is_still_taken_out_and_the_default_applies(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(priority_header="false", default_priority="transactional")
    code, text = send(ingress, b"X-Mxfleet-Priority: bulk\r\nSubject: x\r\n\r\nbody\r\n")
    assert code == 250, text
    msg_id = queued_id(text)
    assert b"X-Mxfleet-Priority" not in body(spool, msg_id)
    assert stored_class(spool, msg_id)[0] == "transactional"  # the default, not the header
    code, text = send(ingress, b"X-Mxfleet-Priority: junk\r\n\r\nbody\r\n")
    assert code == 250, text  # not read, so not refused
