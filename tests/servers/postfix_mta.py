"""A private Postfix instance on 127.0.0.N: a real MTA from Debian's packages as an MX host.

``PostfixMta(workdir, host, port, domain, mailboxes, relay_to).start()`` writes its own
main.cf and master.cf under ``workdir/config`` and starts ``postfix -c workdir/config``;
``stop()`` runs ``postfix -c ... stop`` and waits until every process of the instance is
gone. The instance shares nothing with the system's Postfix (``/etc/postfix``, the instance
on 127.0.0.1:25): its own config, queue and data directories, its own ``syslog_name``, and
its log in ``workdir/maillog`` (``maillog_file``, written by postlogd). ``postfix check``
runs as part of ``postfix start``; ``set-permissions`` is never run, since it would also
touch the shared files in ``/usr``.

What it does with mail:

- its only listener is smtpd on ``host:port`` (the single ``inet`` entry in master.cf);
  ``inet_interfaces = 127.0.0.1`` is just the interface Postfix demands to exist (only
  127.0.0.1 is configured on ``lo``, 127.0.0.N are routed to it but are not interface
  addresses) and binds nothing by itself;
- ``domain`` is a relay domain whose recipients are ``mailboxes`` (local parts): any other
  recipient is refused at RCPT with ``550 5.1.1 ... User unknown in relay recipient table``;
- accepted mail is relayed to ``[relay_to]`` (an :class:`~tests.servers.smtp_sink.SmtpSink`),
  with nothing changed but one ``Received:`` field at the top (no header rewriting, no
  added headers, no TLS).

Postfix's master starts as root and drops to ``mail_owner`` (``postfix``) for most work;
after a ``chdir`` into the queue directory that needs no access to the directories above it,
but ``data_directory`` (``master.lock``) is opened by path as ``postfix``, so it goes where
``postfix`` can reach it: under ``workdir`` when every directory above is searchable by
others, else in a scratch directory under the system temporary directory (pytest's
``/tmp/pytest-of-root`` is 0700), removed by ``stop()``.

Tests call :func:`require_postfix` first: it skips locally and fails under ``CI`` when Postfix
is not installed (Debian package ``postfix``) or the tests do not run as root.
"""

import contextlib
import os
import shutil
import signal
import smtplib
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers.wait import wait_until

POSTFIX_CANDIDATES = ("/usr/sbin/postfix", "/usr/local/sbin/postfix")
HOSTNAME = "mx.postfix.test"

_MAIN_CF = """\
# A private test instance, started with `postfix -c {config}`; see tests/servers/postfix_mta.py.
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
syslog_name = {syslog_name}
maillog_file = {maillog}
maillog_file_prefixes = {workdir}
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = postfix.test
myorigin = $myhostname
# Only the master.cf listener binds; this is the interface Postfix requires to exist.
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains = {domain}
relay_recipient_maps = {recipients}
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unlisted_recipient
relayhost = [{relay_host}]:{relay_port}
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
local_header_rewrite_clients =
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtpd_banner = $myhostname ESMTP $mail_name
biff = no
notify_classes =
default_process_limit = 20
"""

# No chroot (the queue directory is not set up as one), only the services relaying needs.
_MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def require_postfix() -> Path:
    """The ``postfix`` command; skip locally, fail in CI, when this machine cannot run one."""
    found = shutil.which("postfix") or next(
        (path for path in POSTFIX_CANDIDATES if os.access(path, os.X_OK)), None
    )
    problem = ""
    if found is None:
        problem = "Postfix is not installed (apt-get install postfix)"
    elif os.geteuid() != 0:
        problem = "a private Postfix instance needs root (its master runs as root)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    assert found is not None
    return Path(found)


def _searchable(path: Path) -> bool:
    """Every directory from ``/`` down to ``path`` lets others through (``o+x``)."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _group_alive(pgid: int) -> bool:
    """A process of group ``pgid`` is still running (zombies do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp, ...
            return True
    return False


@dataclass
class PostfixMta:
    """One private instance; see the module docstring."""

    workdir: Path
    host: str  # 127.0.0.N, never 127.0.0.1 (the system instance's address)
    port: int
    domain: str
    mailboxes: tuple[str, ...]  # local parts of ``domain`` that are accepted
    relay_to: tuple[str, int]  # where accepted mail goes: an SMTP sink
    hostname: str = HOSTNAME
    ehlo_keywords: frozenset[str] = frozenset()  # what smtpd advertised, after start()
    _postfix: Path = field(default=Path("postfix"), init=False)
    _scratch: Path | None = field(default=None, init=False)
    _pgid: int | None = field(default=None, init=False)

    @property
    def config(self) -> Path:
        return self.workdir / "config"

    @property
    def queue(self) -> Path:
        return self.workdir / "queue"

    @property
    def maillog(self) -> Path:
        return self.workdir / "maillog"

    def log(self) -> str:
        """The instance's log so far ("" before anything was logged)."""
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def start(self, timeout: float = 30.0) -> "PostfixMta":
        if self.host == "127.0.0.1" or not self.host.startswith("127."):
            raise ValueError(f"a private instance listens on 127.0.0.N (N > 1), not {self.host}")
        self._postfix = require_postfix()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.mkdir()
        self.queue.mkdir()  # Postfix creates its subdirectories (post-install create-missing)
        try:
            self._write_config()
            self._run("start", timeout)
            self._pgid = int((self.queue / "pid" / "master.pid").read_text().split()[0])
            self.ehlo_keywords = wait_until(self._probe, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _data_directory(self) -> Path:
        if _searchable(self.workdir):
            return self.workdir / "data"
        base = next(
            (p for p in (Path(tempfile.gettempdir()), Path("/tmp")) if _searchable(p)), None
        )
        if base is None:
            raise RuntimeError("no temporary directory that the postfix user can reach")
        self._scratch = Path(tempfile.mkdtemp(prefix="mxfleet-postfix-", dir=base))
        self._scratch.chmod(0o755)
        return self._scratch / "data"  # created by Postfix, owned by mail_owner

    def _write_config(self) -> None:
        recipients = ", ".join(f"{{{box}@{self.domain} = ok}}" for box in self.mailboxes)
        values = {
            "config": self.config,
            "queue": self.queue,
            "data": self._data_directory(),
            "syslog_name": f"postfix-mxfleet-{os.getpid()}-{self.port}",
            "maillog": self.maillog,
            "workdir": self.workdir,
            "hostname": self.hostname,
            "domain": self.domain,
            "recipients": f"inline:{{ {recipients} }}",
            "relay_host": self.relay_to[0],
            "relay_port": self.relay_to[1],
            "host": self.host,
            "port": self.port,
        }
        (self.config / "main.cf").write_text(_MAIN_CF.format(**values))
        (self.config / "master.cf").write_text(_MASTER_CF.format(**values))

    def _run(self, command: str, timeout: float) -> None:
        done = subprocess.run(
            [str(self._postfix), "-c", str(self.config), command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"postfix {command} exited with {done.returncode}\n"
                f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
                f"== {self.maillog}\n{self.log()[-4000:]}"
            )

    def _probe(self) -> frozenset[str]:
        """smtpd's EHLO keywords, once it answers (empty while it does not)."""
        try:
            with smtplib.SMTP(self.host, self.port, timeout=5) as smtp:
                code, _ = smtp.ehlo("probe.test")
                if code != 250:
                    return frozenset()
                return frozenset(keyword.upper() for keyword in smtp.esmtp_features)
        except (OSError, smtplib.SMTPException):
            return frozenset()

    def stop(self, timeout: float = 20.0) -> None:
        """``postfix stop``, then wait until every process of the instance has exited."""
        pgid, self._pgid = self._pgid, None
        if pgid is not None:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self._run("stop", timeout)
            try:
                wait_until(lambda: not _group_alive(pgid), timeout)
            except AssertionError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)  # the group of the master we started
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> "PostfixMta":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
