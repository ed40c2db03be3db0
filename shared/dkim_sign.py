"""DKIM signatures for accepted mail and the relay's DSNs (RFC 6376 relaxed/relaxed; RFC 8463
for Ed25519).

Which domain signs (the d= tag): the domain of the message's one RFC 5322 From: address,
the identifier DMARC aligns with (RFC 7489 §3.1); when the header has no single From:
address, the envelope sender's domain. Its keys, or those of its nearest parent domain
with keys (see ``shared/dkim_keys.py``), sign; a domain without keys passes unsigned, and
so does mail that already carries a signature of the same d= and s= (resubmitted, or a
loop), since one more would add nothing.

Signed fields: those of :data:`SIGNED` the message has, each as often as it occurs, plus
one more ``from`` (and one more of each present field of :data:`OVERSIGNED`) so that no
such field can be added without breaking the signature (RFC 6376 §8.15). Received: and
Return-Path: are never signed: relays add them.

Who does what: dkimpy parses the header section and canonicalises, selects and hashes the
signed fields (the code its verifier runs); this module hashes the body and asks
``cryptography`` (OpenSSL) for the signature. dkimpy's own ``sign()`` computes RSA in pure
Python (~5.5 ms of CPU per 2048-bit signature, holding the GIL, against ~0.2 ms here) and
canonicalises a body at 25-50 µs per KiB (2-8 here; tests/bench/dkim.py measures both).
"""

import base64
import email.utils
import hashlib
import logging
import re
import time
from collections.abc import Sequence

import dkim
import dkim.util
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

from shared import log
from shared.dkim_keys import DkimKey, KeyRing
from shared.header_section import split_header
from shared.message import AddressError, Mailbox, normalise_domain
from shared.settings import Settings

Header = tuple[bytes, bytes]  # (name, value as in the message: leading space, CRLF-ended)

SIGNED = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"in-reply-to",
    b"references", b"mime-version", b"content-type", b"content-transfer-encoding",
    b"list-unsubscribe", b"list-unsubscribe-post",
)  # fmt: skip
# What a reader sees as sender, recipients and topic: one more instance is signed too.
OVERSIGNED = (b"from", b"reply-to", b"to", b"cc", b"subject")
SLICE_BYTES = 64 * 1024
WIDTH = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters

_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_WSP_RUN = re.compile(rb"\t[\t ]*| [\t ]+")  # runs that relaxed canonicalisation changes


class SigningError(ValueError):
    """The message cannot be signed (its header section does not parse)."""


def parse_header(header: bytes) -> list[Header]:
    """The header fields of a header section (dkimpy's parser, as its verifier reads them)."""
    try:
        fields = dkim.rfc822_parse(header + b"\r\n")[0]
    except dkim.MessageFormatError as exc:
        raise SigningError(str(exc)) from None
    return [(bytes(name), bytes(value)) for name, value in fields]


def from_domain(headers: Sequence[Header]) -> str | None:
    """The domain of the one From: address, lower-case A-label, or None (RFC 5322 §3.6.2)."""
    values = [value for name, value in headers if name.lower() == b"from"]
    if len(values) != 1:
        return None
    text = values[0].replace(b"\r\n", b"").decode("utf-8", "surrogateescape")
    addresses = [address for _, address in email.utils.getaddresses([text]) if address]
    if len(addresses) != 1:
        return None
    _, at, domain = addresses[0].rpartition("@")
    try:
        return normalise_domain(domain) if at and domain else None
    except AddressError:
        return None


def signed_fields(headers: Sequence[Header]) -> list[bytes]:
    """The h= list: present fields of SIGNED in order, then the oversigned ones."""
    names = [name.lower() for name, _ in headers if name.lower() in SIGNED]
    extra = [name for name in OVERSIGNED if name == b"from" or name in names]
    return names + extra


def existing_signatures(headers: Sequence[Header]) -> set[tuple[str, str]]:
    """(d=, s=) of the DKIM-Signature fields the message already carries."""
    found = set()
    for name, value in headers:
        if name.lower() != b"dkim-signature":
            continue
        try:
            tags = dkim.util.parse_tag_value(value.replace(b"\r\n", b""))
        except dkim.util.InvalidTagValueList:
            continue
        domain, selector = tags.get(b"d", b""), tags.get(b"s", b"")
        found.add(
            (domain.decode("ascii", "replace").lower(), selector.decode("ascii", "replace").lower())
        )
    return found


def _line_ends(part: bytes) -> int:
    """How many bytes of CRLF pairs end ``part`` (a bare CR before them is text)."""
    tail = len(part) - len(part.rstrip(b"\r\n"))
    if tail % 2 == 0 and part.endswith(b"\r\n" * (tail // 2)):
        return tail
    count = 0
    while part.endswith(b"\r\n", 0, len(part) - count):
        count += 2
    return count


def relaxed_body_hash(body: bytes, slice_bytes: int = SLICE_BYTES) -> bytes:
    """SHA-256 of the body in relaxed canonical form (RFC 6376 §3.4.4), in slices of whole
    lines: runs of WSP become one SP, WSP at line ends goes, empty lines at the end go."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"  # §3.4.4: a CRLF is added to a non-empty body without one
    digest = hashlib.sha256()
    held = b""  # line ends not hashed yet: they count only if a non-empty line follows
    text_seen = False
    start = 0
    while start < len(body):
        end = body.find(b"\r\n", start + slice_bytes)
        end = len(body) if end < 0 else end + 2
        part = body[start:end]
        if b"\t" in part or b"  " in part:
            part = _WSP_RUN.sub(b" ", part)
        part = part.replace(b" \r\n", b"\r\n")
        ends = _line_ends(part)
        if ends < len(part):
            digest.update(held)
            digest.update(part[: len(part) - ends])
            held, text_seen = part[len(part) - ends :], True
        else:
            held += part
        start = end
    if text_seen:  # the last line's own CRLF; a body of empty lines hashes as empty
        digest.update(b"\r\n")
    return digest.digest()


def _fold(pieces: list[bytes]) -> bytes:
    """``DKIM-Signature:`` and the pieces, folded (CRLF SP) before a piece that would take
    its line past WIDTH (RFC 5322 §2.2.3). A piece joins the one before with a space, or
    with nothing when it starts with ":" (the h= list); either place allows FWS (§3.5)."""
    lines = [b"DKIM-Signature:"]
    for piece in pieces:
        glue = b"" if piece.startswith(b":") else b" "
        if len(lines[-1]) + len(glue) + len(piece) > WIDTH:
            lines.append(b"")
            glue = b" "
        lines[-1] += glue + piece
    return b"\r\n".join(lines)


def signature_field(
    key: DkimKey, canonical: list[Header], names: list[bytes], body_hash: bytes, now: int
) -> bytes:
    """One ``DKIM-Signature:`` field, CRLF-ended (RFC 6376 §3.5, §3.7)."""
    h = [b"h=" + names[0]] + [b":" + name for name in names[1:]]
    h[-1] += b";"
    pieces = [
        b"v=1;", f"a={key.algorithm};".encode(), b"c=relaxed/relaxed;",
        f"d={key.domain};".encode(), f"s={key.selector};".encode(), b"t=%d;" % now,
        *h, b"bh=" + base64.b64encode(body_hash) + b";", b"b=",
    ]  # fmt: skip
    unsigned = _fold(pieces)  # what is hashed: the field with an empty b= (§3.7)
    digest = hashlib.sha256()
    field = (b"DKIM-Signature", unsigned[len(b"DKIM-Signature:") :])
    dkim.hash_headers(digest, _RELAXED, canonical, names, field, {})
    if isinstance(key.key, rsa.RSAPrivateKey):
        signature = key.key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    else:  # RFC 8463 §3: PureEdDSA Ed25519 over the SHA-256 hash
        signature = key.key.sign(digest.digest())
    b = base64.b64encode(signature)
    room = max(1, WIDTH - (len(unsigned) - unsigned.rfind(b"\n") - 1))
    chunks = [b[:room]] + [b[i : i + WIDTH - 1] for i in range(room, len(b), WIDTH - 1)]
    return unsigned + b"\r\n ".join(chunks) + b"\r\n"


class Signer:
    """Signs a message with the keys of its From: domain (see the module's text).

    The ingress signs each accepted message once, before it is stored (so every attempt
    and every recipient domain carries the same signatures); a worker signs the DSNs it
    writes, whose From: is the relay's own ``MAILER-DAEMON@hostname``.
    """

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    def sign(self, message: bytes, sender: Mailbox | None) -> tuple[bytes, str]:
        """(the DKIM-Signature fields to prepend, or b""; the outcome for the metric:
        signed, no_key or already_signed). Raises SigningError for a header section that
        does not parse."""
        header, rest = split_header(message)
        headers = parse_header(header)
        domain = from_domain(headers) or (sender.destination if sender else None)
        keys = self.ring.signing_keys(domain) if domain else ()
        if not keys:
            return b"", "no_key"
        present = existing_signatures(headers)
        keys = tuple(key for key in keys if (key.domain, key.selector) not in present)
        if not keys:
            return b"", "already_signed"
        body_hash = relaxed_body_hash(rest[2:] if header else rest)
        canonical = _RELAXED.canonicalize_headers(headers)
        names = signed_fields(headers)
        now = int(time.time())
        fields = b"".join(signature_field(key, canonical, names, body_hash, now) for key in keys)
        for key in keys:
            self.signed(key)
        return fields, "signed"

    def sign_or_not(
        self, message: bytes, sender: Mailbox | None
    ) -> tuple[bytes, str, ValueError | None]:
        """:meth:`sign` for mail that goes on unsigned when it cannot be signed: (fields,
        outcome, the error); a header section that does not parse gives (b"", "failed",
        the error), anything else no error."""
        try:
            fields, result = self.sign(message, sender)
        except ValueError as exc:  # SigningError, UnicodeError
            return b"", "failed", exc
        return fields, result, None

    def signed(self, key: DkimKey) -> None:
        """Called once per signature added (the ingress counts them by algorithm)."""


def load_keys(settings: Settings, logger: logging.Logger) -> KeyRing:
    """The process's keys, read once, at start, and listed in the log (DkimKeyError names
    a file that is not a usable key)."""
    if settings.dkim_keys_dir is None:
        return KeyRing([])
    ring = KeyRing.load(settings.dkim_keys_dir)
    signing = ring.signing
    log.event(
        logger,
        "dkim_keys",
        logging.INFO if signing else logging.WARNING,
        dir=settings.dkim_keys_dir,
        signing=" ".join(key.describe() for key in signing) or "none",
        standby=" ".join(key.describe() for key in ring.keys if key not in signing) or "none",
    )
    for path in ring.ignored:
        log.event(logger, "dkim_file_ignored", logging.WARNING, file=path, reason="not *.key")
    return ring
