"""A client of the ingress's HTTP API for tests: one keep-alive connection, JSON in and out."""

import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any

from tests.servers.wait import wait_until


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of an error answer."""
        error: dict[str, Any] = self.json["error"]
        return error


class ApiClient:
    def __init__(
        self,
        port: int,
        token: str | None,
        host: str = "127.0.0.1",
        context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.token = token
        if context is None:
            self.conn: http.client.HTTPConnection = http.client.HTTPConnection(
                host, port, timeout=timeout
            )
        else:
            self.conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = {"Content-Type": "application/json"} if body is not None else {}
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token}"
        sent.update(headers or {})
        self.conn.request(method, path, body=body, headers=sent)
        response = self.conn.getresponse()
        return Answer(response.status, response.headers, response.read())

    def post(self, path: str, document: object, headers: dict[str, str] | None = None) -> Answer:
        return self.request("POST", path, json.dumps(document).encode(), headers)

    def send(self, message: dict[str, Any]) -> Answer:
        return self.post("/v1/messages", message)

    def batch(self, messages: list[dict[str, Any]]) -> Answer:
        return self.post("/v1/messages/batch", {"messages": messages})

    def close(self) -> None:
        self.conn.close()


def answers(port: int, host: str = "127.0.0.1", context: ssl.SSLContext | None = None) -> bool:
    """True once the API port answers HTTP (for ``wait_until``)."""
    try:
        with ApiClient(port, None, host, context, timeout=2) as client:
            return client.request("GET", "/openapi.json").status == 200
    except OSError:
        return False


def wait_for_api(port: int, context: ssl.SSLContext | None = None, timeout: float = 10) -> None:
    wait_until(lambda: answers(port, context=context), timeout)
