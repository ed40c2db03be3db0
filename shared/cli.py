"""``mxfleet``: the one console script (the operator contract in DESIGN.md).

Each role lives in its own package; this module finds it by name (``ingress.main``), so
``shared`` never imports the roles at module level.
"""

import argparse
import getpass
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared import log
from shared.passwords import hash_password
from shared.settings import Settings, SettingsError, load_settings

ROLES = {"ingress": "ingress.main", "dispatcher": "workers.dispatcher", "worker": "workers.main"}
# Operator tools: each module has configure(parser) and run(settings, args) -> exit code.
TOOLS = {
    "queue": ("workers.queue_cli", "inspect and steer the queue"),
    "status": ("workers.status_cli", "cluster health: Redis, processes, backlog, recent rates"),
    "events": ("workers.events_cli", "delivery events: print them, follow them, post to a webhook"),
    "suppress": ("workers.suppress_cli", "the suppression list: add, remove, list, import"),
}
UP_DEFAULTS = {
    "MXFLEET_LISTEN": "127.0.0.1:2525",
    "MXFLEET_METRICS_LISTEN": "127.0.0.1:9100",
    "MXFLEET_HOSTNAME": "localhost.localdomain",
}


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        print(f"mxfleet: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run_role(name: str) -> int:
    settings = _settings()
    log.setup(settings.log_level)
    role_main: Callable[[Settings], int] = importlib.import_module(ROLES[name]).main
    return role_main(settings)


def cmd_passwd(args: argparse.Namespace) -> int:
    """Print a credentials-file line for USER (password from stdin or a prompt)."""
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.user}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("mxfleet: empty password", file=sys.stderr)
        return 2
    print(f"{args.user}:{hash_password(password)}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """A single-node cluster: embedded Redis (unless configured) and every role."""
    from shared.embedded import EmbeddedRedis, EmbeddedRedisError

    env = {**UP_DEFAULTS, **os.environ}
    settings = _settings(**{k.removeprefix("MXFLEET_").lower(): v for k, v in UP_DEFAULTS.items()})
    log.setup(settings.log_level)
    embedded = None
    if settings.redis_url is None:
        try:
            embedded = EmbeddedRedis(Path(args.data_dir).resolve() / "redis").start()
        except EmbeddedRedisError as exc:
            print(f"mxfleet: {exc}", file=sys.stderr)
            return 2
        env["MXFLEET_REDIS_URL"] = embedded.url
        print(f"mxfleet: embedded Redis {embedded.url} (AOF in {embedded.data_dir})", flush=True)
    host, port = env["MXFLEET_METRICS_LISTEN"].rsplit(":", 1)
    children = [
        subprocess.Popen(  # noqa: S603 -- our own argv
            [sys.executable, "-m", "shared.cli", role],
            env={**env, "MXFLEET_METRICS_LISTEN": f"{host}:{int(port) + index}"},
        )
        for index, role in enumerate(ROLES)
    ]
    print(f"mxfleet: SMTP on {env['MXFLEET_LISTEN']}; Ctrl-C stops", flush=True)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    code = max((child.wait() for child in children), default=0)
    if embedded is not None:
        embedded.stop()
    return 0 if stopping else (code or 1)


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective policies, or the destination and policy of one domain."""
    settings = _settings()
    explain = importlib.import_module("workers.explain")
    code: int = explain.show(settings, args.domain, as_json=args.json)
    return code


def cmd_tool(args: argparse.Namespace) -> int:
    settings = _settings()
    code: int = importlib.import_module(TOOLS[args.command][0]).run(settings, args)
    return code


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the tool named by ``command`` is imported (roles never
    import the operator tools)."""
    top = argparse.ArgumentParser(prog="mxfleet", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="single-node cluster (embedded Redis unless configured)")
    up.add_argument("--data-dir", default="var", help="where the embedded Redis keeps its AOF")
    up.set_defaults(func=cmd_up)
    sub.add_parser("ingress", help="one SMTP ingress node").set_defaults(func=None)
    sub.add_parser("dispatcher", help="dispatcher and reaper (leader-elected)").set_defaults(
        func=None
    )
    sub.add_parser("worker", help="one delivery worker (Celery, threads)").set_defaults(func=None)
    config = sub.add_parser("config", help="show the effective configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser(
        "show", help="the delivery policies; with DOMAIN, its destination and policy"
    )
    show.add_argument("domain", nargs="?", help="a recipient domain (its MX may be looked up)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_config)
    for name, (module, summary) in TOOLS.items():
        tool = sub.add_parser(name, help=summary, description=summary)
        if name == command:
            importlib.import_module(module).configure(tool)
        tool.set_defaults(func=cmd_tool)
    passwd = sub.add_parser("passwd", help="print a credentials-file line for SMTP AUTH")
    passwd.add_argument("user")
    passwd.set_defaults(func=cmd_passwd)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(argv[0] if argv else None).parse_args(argv)
    if args.func is None:
        return run_role(args.command)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
