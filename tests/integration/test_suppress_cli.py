"""``mxfleet suppress`` against a real Redis: add, rm, ls (table and JSON), import; bad
arguments and files exit 2 with a message, an unreachable Redis exits 1."""

import json
from pathlib import Path

import pytest

from shared.cli import main
from tests.integration.test_cli import run_cli
from tests.servers.redis_server import RedisServer
from tests.servers.spool_client import SpoolClient


@pytest.fixture
def mxfleet(
    redis_server: RedisServer, spool: SpoolClient, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> "Run":  # fmt: skip
    monkeypatch.setenv("MXFLEET_REDIS_URL", redis_server.url)
    return Run(capsys)


class Run:
    """``mxfleet suppress ...`` in this process: (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["suppress", *args])
        out, err = self.capsys.readouterr()
        return code, out, err


def test_add_ls_rm(mxfleet: Run, spool: SpoolClient) -> None:
    assert mxfleet("add", "<Bob@Dest.Test>") == (
        0, "Bob@Dest.Test: suppressed for every sender (never expires)\n", ""
    )  # fmt: skip
    code, out, _ = mxfleet("add", "eve@dest.test", "--domain", "Shop.Test", "--ttl", "2h")
    assert (code, out) == (
        0,
        "eve@dest.test: suppressed for senders in shop.test (expires in 2h)\n",
    )
    assert 7_190_000 < spool.pttl("mxf:supp:shop.test:eve@dest.test") <= 7_200_000
    code, out, _ = mxfleet("ls")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ADDRESS", "SCOPE", "ADDED", "EXPIRES", "REASON"]
    eve, bob = (line.split() for line in lines[1:3])  # soonest to expire first
    assert (eve[0], eve[1], eve[4]) == ("eve@dest.test", "shop.test", "operator")
    assert eve[3].endswith("Z")
    assert eve[3] > eve[2]
    assert (bob[0], bob[1], bob[3], bob[4]) == ("Bob@dest.test", "global", "never", "operator")
    assert lines[3] == "(2 entries; written since the spool began: 0 by bounces, 2 by operators)"
    code, out, _ = mxfleet("ls", "--global", "--json")
    (only,) = json.loads(out)
    assert only["address"] == "Bob@dest.test"
    assert (only["scope"], only["source"], only["expires_ms"]) == ("global", "operator", 0)
    code, out, _ = mxfleet("ls", "--domain", "shop.test", "--limit", "1")
    assert "eve@dest.test" in out
    assert "Bob" not in out
    code, out, _ = mxfleet("ls", "--limit", "1")
    assert out.splitlines()[-1].startswith("(1 of 2 entries;")
    assert mxfleet("rm", "BOB@dest.test") == (0, "BOB@dest.test: removed for every sender\n", "")
    code, _, err = mxfleet("rm", "bob@dest.test")
    assert (code, err) == (
        2,
        "mxfleet suppress: bob@dest.test is not on the list for every sender\n",
    )
    code, _, err = mxfleet("rm", "eve@dest.test")  # it is listed for shop.test only
    assert code == 2
    assert mxfleet("rm", "eve@dest.test", "--domain", "shop.test")[0] == 0
    assert spool.keys("mxf:supp*") == []


def test_import(mxfleet: Run, tmp_path: Path, spool: SpoolClient) -> None:
    listing = tmp_path / "optouts.txt"
    listing.write_text(
        "# opt-outs\n\na@dest.test\nB@dest.test  # by phone\nb@DEST.test\nnot-an-address\n"
        "c@dest.test\n@dest.test\n",
        "utf-8",
    )
    code, out, err = mxfleet("import", str(listing), "--domain", "shop.test", "--ttl", "1d")
    assert code == 1, err  # the valid lines are in, the invalid ones named
    assert (
        out == f"{listing}: 3 added for senders in shop.test (0 were listed already), 2 invalid\n"
    )
    assert err.splitlines() == [
        f"mxfleet suppress: {listing}:6: not an address: 'not-an-address'",
        f"mxfleet suppress: {listing}:8: not an address: '@dest.test'",
    ]
    assert len(spool.keys("mxf:supp:shop.test:*")) == 3
    clean = tmp_path / "clean.txt"
    clean.write_text("a@dest.test\nd@dest.test\n", "utf-8")
    code, out, _ = mxfleet("import", str(clean), "--domain", "shop.test")
    assert code == 0
    assert out.endswith(": 2 added for senders in shop.test (1 were listed already), 0 invalid\n")
    assert spool.pttl("mxf:supp:shop.test:a@dest.test") == -1  # re-added without a TTL


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "nobody"), "'nobody' is not an address"),
        (("add", "a@dest.test", "--domain", "local"), "--domain 'local' is not a domain"),
        (("add", "a@dest.test", "--ttl", "soon"), "--ttl: 'soon' is not a duration"),
        (("rm", "a@"), "'a@' is not an address"),
        (("ls", "--limit", "-1"), "--limit must be 0 (all) or more"),
        (("import", "/nonexistent/list"), "/nonexistent/list: cannot read"),
    ],
)
def test_bad_arguments_exit_2(mxfleet: Run, args: tuple[str, ...], message: str) -> None:
    code, out, err = mxfleet(*args)
    assert (code, out) == (2, "")
    assert err.startswith("mxfleet suppress: " + message), err


def test_a_file_that_is_not_text_exits_2(mxfleet: Run, tmp_path: Path) -> None:
    binary = tmp_path / "list.bin"
    binary.write_bytes(b"a@dest.test\n\xff\xfe\n")
    code, _, err = mxfleet("import", str(binary))
    assert code == 2
    assert "not UTF-8 text" in err


def test_as_a_command(redis_server: RedisServer, spool: SpoolClient, tmp_path: Path) -> None:
    env = {"MXFLEET_REDIS_URL": redis_server.url}
    listing = tmp_path / "list.txt"
    listing.write_text("a@dest.test\n", "utf-8")
    result = run_cli("suppress", "import", "-", env=env, stdin=listing.read_text())
    assert result.returncode == 0, result.stderr
    assert result.stdout == "-: 1 added for every sender (0 were listed already), 0 invalid\n"
    shown = run_cli("suppress", "ls", "--json", env=env)
    assert [entry["address"] for entry in json.loads(shown.stdout)] == ["a@dest.test"]
    down = run_cli("suppress", "ls", env={"MXFLEET_REDIS_URL": "redis://127.0.0.1:9/0"})
    assert down.returncode == 1
    assert down.stderr.startswith("mxfleet suppress: Redis unreachable:")
    assert "Traceback" not in down.stderr
    unset = run_cli("suppress", "ls")
    assert unset.returncode == 2
    assert unset.stderr == "mxfleet suppress: MXFLEET_REDIS_URL is not set\n"
