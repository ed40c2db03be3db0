"""The HTTP side of a process under test: GET an endpoint, read a Prometheus sample."""

import http.client
import re


def http_get(
    port: int, path: str, host: str = "127.0.0.1", timeout: float = 5.0
) -> tuple[int, str]:
    """(status, body) of ``GET path``; raises OSError when nothing answers."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def try_get(port: int, path: str) -> tuple[int, str] | None:
    """Like :func:`http_get`, None when nothing answers (for ``wait_until``)."""
    try:
        return http_get(port, path)
    except OSError:
        return None


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels}`` in Prometheus text, None when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)(?: \d+)?", line)
        if match is None or match.group(1) != name:
            continue
        found = ",".join(sorted(part for part in (match.group(2) or "").split(",") if part))
        if found == wanted:
            return float(match.group(3))
    return None


def metric(port: int, name: str, **labels: str) -> float:
    """A sample read from ``/metrics`` on ``port``; 0.0 when the series does not exist yet."""
    status, text = http_get(port, "/metrics")
    assert status == 200, (status, text)
    value = sample(text, name, **labels)
    return 0.0 if value is None else value
