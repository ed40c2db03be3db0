"""A DKIM verifier for tests (RFC 6376 §6; RFC 8463 for Ed25519), written apart from the
signer (shared/dkim_sign.py) and from dkimpy, so that a shared mistake cannot pass.

``verify(message, lookup)`` checks every DKIM-Signature field of ``message`` and returns a
:class:`Verdict` per field; ``lookup(name)`` returns the TXT record text of
``<selector>._domainkey.<domain>`` (:func:`dns_lookup` asks a DNS server). Canonicalisation
``simple`` and ``relaxed`` (§3.4), rsa-sha256 and ed25519-sha256; no l= or x= checks.
"""

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import dns.rdtypes.ANY.TXT
import dns.resolver
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

Lookup = Callable[[str], str]
Field = tuple[str, bytes]  # (name as written, the raw field: "Name: value\r\n" with folding)


@dataclass(frozen=True)
class Verdict:
    domain: str
    selector: str
    algorithm: str
    ok: bool
    reason: str  # "pass", or why not


def split(message: bytes) -> tuple[list[Field], bytes]:
    """Header fields (continuation lines joined, CRLFs kept) and the body after the blank line."""
    head, _, body = message.partition(b"\r\n\r\n")
    fields: list[Field] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line + b"\r\n")
        else:
            fields.append((line.split(b":", 1)[0].decode("ascii", "replace"), line + b"\r\n"))
    return fields, body


def tags(text: bytes) -> dict[str, str]:
    """A tag=value list (RFC 6376 §3.2), whitespace around tags and values dropped."""
    out = {}
    for item in re.sub(rb"\r\n", b"", text).decode("ascii", "replace").split(";"):
        name, sep, value = item.partition("=")
        if sep:
            out[name.strip()] = value.strip()
    return out


def canon_header(raw: bytes, relaxed: bool) -> bytes:
    if not relaxed:
        return raw
    name, _, value = raw.partition(b":")
    value = re.sub(rb"[ \t]+", b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value + b"\r\n"


def canon_body(body: bytes, relaxed: bool) -> bytes:
    lines = body.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()  # what follows the last CRLF
    if relaxed:
        lines = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in lines]
    while lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        return b"" if relaxed else b"\r\n"
    return b"".join(line + b"\r\n" for line in lines)


def header_data(fields: list[Field], signature: Field, names: list[str], relaxed: bool) -> bytes:
    """What the signature covers (§3.7): the h= fields, each taken from the bottom up, then
    the DKIM-Signature field with its b= value emptied and without its final CRLF."""
    used: set[int] = set()
    data = b""
    for name in names:
        for index in range(len(fields) - 1, -1, -1):
            if index not in used and fields[index][0].strip().lower() == name:
                used.add(index)
                data += canon_header(fields[index][1], relaxed)
                break
    unsigned = re.sub(
        rb"((?:^|;)[ \t\r\n]*b[ \t\r\n]*=)[^;]*", rb"\1", signature[1].split(b":", 1)[1]
    )
    return data + canon_header(b"DKIM-Signature:" + unsigned, relaxed).removesuffix(b"\r\n")


def check(fields: list[Field], body: bytes, signature: Field, lookup: Lookup) -> Verdict:
    t = tags(signature[1].split(b":", 1)[1])
    domain, selector, algorithm = t.get("d", ""), t.get("s", ""), t.get("a", "")

    def verdict(reason: str) -> Verdict:
        return Verdict(domain, selector, algorithm, reason == "pass", reason)

    header_c, _, body_c = t.get("c", "simple/simple").partition("/")
    names = [name.strip().lower() for name in t.get("h", "").split(":")]
    if t.get("v") != "1" or algorithm not in ("rsa-sha256", "ed25519-sha256"):
        return verdict(f"unsupported v={t.get('v')} a={algorithm}")
    if "from" not in names:
        return verdict("From: not signed")  # §6.1.1
    bh = base64.b64encode(hashlib.sha256(canon_body(body, body_c == "relaxed")).digest())
    if bh.decode() != re.sub(r"\s", "", t.get("bh", "")):
        return verdict("body hash mismatch")
    key_tags = tags(lookup(f"{selector}._domainkey.{domain}").encode())
    public = base64.b64decode(re.sub(r"\s", "", key_tags.get("p", "")))
    if not public:
        return verdict("no key (revoked)")
    digest = hashlib.sha256(header_data(fields, signature, names, header_c == "relaxed")).digest()
    b = base64.b64decode(re.sub(r"\s", "", t.get("b", "")))
    try:
        if algorithm == "rsa-sha256" and key_tags.get("k", "rsa") == "rsa":
            key = serialization.load_der_public_key(public)
            assert isinstance(key, rsa.RSAPublicKey)
            key.verify(b, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        elif algorithm == "ed25519-sha256" and key_tags.get("k") == "ed25519":
            ed25519.Ed25519PublicKey.from_public_bytes(public).verify(b, digest)  # RFC 8463 §3
        else:
            return verdict(f"key type k={key_tags.get('k', 'rsa')} does not fit a={algorithm}")
    except InvalidSignature:
        return verdict("signature mismatch")
    return verdict("pass")


def verify(message: bytes, lookup: Lookup) -> list[Verdict]:
    fields, body = split(message)
    signatures = [f for f in fields if f[0].strip().lower() == "dkim-signature"]
    return [check(fields, body, signature, lookup) for signature in signatures]


def dns_lookup(resolver: dns.resolver.Resolver) -> Lookup:
    """TXT records through ``resolver`` (the test DNS server): the strings of the first one,
    joined (RFC 6376 §3.6.2.2)."""

    def lookup(name: str) -> str:
        record = resolver.resolve(name, "TXT")[0]
        assert isinstance(record, dns.rdtypes.ANY.TXT.TXT)
        return b"".join(record.strings).decode("ascii")

    return lookup
