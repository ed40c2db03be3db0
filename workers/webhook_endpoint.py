"""The webhook's receiver: its URL and extra header fields as the operator gives them, and
one POST per batch on a fresh connection (redirects are not followed; an ``https://`` URL's
certificate and host name are verified)."""

import http.client
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from workers import events_cli

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # a header name (RFC 9110 §5.6.2)


def parse_url(text: str) -> SplitResult:
    """An ``http://`` or ``https://`` URL with a host; ValueError otherwise."""
    url = urlsplit(text.strip())
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    if url.username is not None:
        raise ValueError("put credentials in --header 'Authorization: ...', not in the URL")
    if url.port == 0:  # a port that is no number or out of range raises ValueError itself
        raise ValueError(f"{text!r}: port 0")
    return url


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` → (name, value); ValueError when it is not a header line."""
    name, colon, value = text.partition(":")
    if not colon or not _TOKEN.match(name) or "\r" in value or "\n" in value:
        raise ValueError(f"{text!r} is not a header such as 'Authorization: Bearer xyz'")
    return name, value.strip()


# --- HTTP -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: no answer (network error, timeout)
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Endpoint:
    """The receiver: one POST per batch on a fresh connection, redirects not followed."""

    def __init__(self, url: SplitResult, headers: dict[str, str], timeout: float) -> None:
        self.url, self.timeout = url, timeout
        self.headers = {"Content-Type": "application/json", "User-Agent": "mxfleet-events"}
        self.headers.update(headers)
        self.shown = f"{url.scheme}://{url.netloc}{url.path}"  # the query may hold a token

    def post(self, body: bytes) -> Answer:
        # HTTPSConnection's default context verifies the certificate and the host name.
        https = self.url.scheme == "https"
        kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
        connection = kind(self.url.hostname or "", self.url.port, timeout=self.timeout)
        target = (self.url.path or "/") + (f"?{self.url.query}" if self.url.query else "")
        try:
            connection.request("POST", target, body=body, headers=self.headers)
            response = connection.getresponse()
            response.read(65536)
            return Answer(response.status, response.reason)
        except (OSError, http.client.HTTPException) as exc:
            return Answer(None, events_cli.one_line(exc))
        finally:
            connection.close()
