"""``mxfleet suppress``: see and edit the suppression list (the Redis side is
:mod:`workers.suppress_ops`).

```
mxfleet suppress add ADDRESS [--domain SENDER_DOMAIN] [--ttl 30d|none]
mxfleet suppress rm ADDRESS [--domain SENDER_DOMAIN]
mxfleet suppress ls [--domain SENDER_DOMAIN | --global] [--limit N] [--json]
mxfleet suppress import FILE [--domain SENDER_DOMAIN] [--ttl 30d|none]
```

Without ``--domain`` an entry is global (every sender); with it, it holds for mail whose
envelope sender is in that domain. An operator's entry never expires unless ``--ttl`` says
so (an opt-out should last until someone removes it); adding an address again replaces its
entry. ``import`` reads one address per line (``-``: standard input), skipping blank lines
and ``#`` comments, and reports how many it added and which lines it could not read.

Exit codes: 0 done; 1 Redis unreachable, or ``import`` found invalid lines (the valid ones
are added); 2 bad arguments, an unreadable file, or ``rm`` of an address not on the list.
"""

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TextIO

import redis

from shared.keys import Keys
from shared.message import AddressError, Mailbox
from shared.redis_conn import sync_client
from shared.settings import Settings
from shared.suppression import GLOBAL, OPERATOR_REASON, Entry, parse_address, parse_scope
from shared.units import parse_duration
from workers.suppress_ops import SuppressionList

NEVER = ("none", "never")
SHOWN_INVALID = 10  # invalid lines of an import named one by one


class UsageError(ValueError):
    """A bad argument or file (exit 2)."""


def parse_ttl(text: str | None) -> int:
    """``--ttl`` in milliseconds: a duration (``30d``), or ``none`` (0: never expires)."""
    if text is None or text.strip().lower() in NEVER:
        return 0
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--ttl: {exc} (or 'none')") from None
    if seconds * 1000 < 1:
        raise UsageError("--ttl must be at least 1ms (or 'none')")
    return int(seconds * 1000)


def _address(text: str) -> Mailbox:
    try:
        return parse_address(text)
    except AddressError as exc:
        raise UsageError(f"{text!r} is not an address: {exc}") from None


def _scope(domain: str | None) -> str:
    try:
        return parse_scope(domain)
    except AddressError as exc:
        raise UsageError(f"--domain {domain!r} is not a domain: {exc}") from None


def read_addresses(lines: Iterable[str]) -> tuple[list[Mailbox], list[tuple[int, str]]]:
    """The addresses of an import file, and its invalid lines (number, text).

    Blank lines and lines starting with ``#`` are skipped, as is a comment after
    whitespace (``a@b.example  # left in May``); ``#`` inside an address is its own."""
    found: list[Mailbox] = []
    invalid: list[tuple[int, str]] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        for mark in (" #", "\t#"):
            text = text.split(mark, 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        try:
            found.append(parse_address(text))
        except AddressError:
            invalid.append((number, text[:200]))
    return found, invalid


def stamp(ms: int) -> str:
    if not ms:
        return "never"
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def scope_name(scope: str) -> str:
    return "global" if scope == GLOBAL else scope


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    domain_help = "the sender domain the entry holds for (default: every sender)"
    ttl_help = "expire after this long ('30d'); default 'none': never"
    add = sub.add_parser("add", help="suppress an address")
    add.add_argument("address")
    add.add_argument("--domain", help=domain_help)
    add.add_argument("--ttl", help=ttl_help)
    rm = sub.add_parser("rm", help="remove an address from the list")
    rm.add_argument("address")
    rm.add_argument("--domain", help=domain_help)
    ls = sub.add_parser("ls", help="the entries, soonest to expire first")
    which = ls.add_mutually_exclusive_group()
    which.add_argument("--domain", help="only the entries of this sender domain")
    which.add_argument("--global", dest="only_global", action="store_true",
                       help="only the global entries")  # fmt: skip
    ls.add_argument("--limit", type=int, default=1000, help="show at most N (0: all)")
    ls.add_argument("--json", action="store_true")
    load = sub.add_parser("import", help="suppress every address of a file (one per line)")
    load.add_argument("file", help="the file ('-': standard input)")
    load.add_argument("--domain", help=domain_help)
    load.add_argument("--ttl", help=ttl_help)


def run(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        client = sync_client(settings)
    except ValueError as exc:  # no redis_url
        _say(str(exc))
        return 2
    suppressions = SuppressionList(client, Keys(settings.redis_key_prefix))
    try:
        return _ACTIONS[args.action](suppressions, args, out or sys.stdout)
    except UsageError as exc:
        _say(str(exc))
        return 2
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        _say(f"Redis unreachable: {' '.join(str(exc).split())}")
        return 1
    except redis.RedisError as exc:
        _say(f"Redis error: {' '.join(str(exc).split())}")
        return 1
    finally:
        client.close()


def _say(message: str) -> None:
    print(f"mxfleet suppress: {message}", file=sys.stderr, flush=True)


def _add(suppressions: SuppressionList, args: argparse.Namespace, out: TextIO) -> int:
    mailbox, scope, ttl_ms = _address(args.address), _scope(args.domain), parse_ttl(args.ttl)
    entry = [(mailbox, OPERATOR_REASON)]
    suppressions.add(scope, entry, ttl_ms=ttl_ms, source="operator", replace=True)
    until = "never expires" if not ttl_ms else f"expires in {args.ttl.strip()}"
    print(f"{mailbox.address}: suppressed for {_for(scope)} ({until})", file=out)
    return 0


def _for(scope: str) -> str:
    return "every sender" if scope == GLOBAL else f"senders in {scope}"


def _rm(suppressions: SuppressionList, args: argparse.Namespace, out: TextIO) -> int:
    mailbox, scope = _address(args.address), _scope(args.domain)
    if not suppressions.remove(scope, mailbox):
        raise UsageError(f"{mailbox.address} is not on the list for {_for(scope)}")
    print(f"{mailbox.address}: removed for {_for(scope)}", file=out)
    return 0


def _ls(suppressions: SuppressionList, args: argparse.Namespace, out: TextIO) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or more")
    scope = GLOBAL if args.only_global else (None if args.domain is None else _scope(args.domain))
    entries, total = suppressions.entries(scope, args.limit)
    if args.json:
        print(json.dumps([_json(entry) for entry in entries], indent=2), file=out)
        return 0
    table = [("ADDRESS", "SCOPE", "ADDED", "EXPIRES", "REASON")]
    table += [(e.address, scope_name(e.scope), stamp(e.added_ms), stamp(e.expires_ms),
               e.reason) for e in entries]  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]).rstrip(), file=out)
    counts = suppressions.added_counts()
    shown = f"{len(entries)} of {total} entries" if len(entries) < total else f"{total} entries"
    print(f"({shown}; written since the spool began: {counts['bounce']} by bounces, "
          f"{counts['operator']} by operators)", file=out)  # fmt: skip
    return 0


def _json(entry: Entry) -> dict[str, object]:
    found = dataclasses.asdict(entry)
    found["scope"] = scope_name(entry.scope)
    return found


def _import(suppressions: SuppressionList, args: argparse.Namespace, out: TextIO) -> int:
    scope, ttl_ms = _scope(args.domain), parse_ttl(args.ttl)
    try:
        if args.file == "-":
            mailboxes, invalid = read_addresses(sys.stdin)
        else:
            with open(args.file, encoding="utf-8") as handle:
                mailboxes, invalid = read_addresses(handle)
    except OSError as exc:
        raise UsageError(f"{args.file}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{args.file}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    entries = [(mailbox, OPERATOR_REASON) for mailbox in mailboxes]
    written, fresh = suppressions.add(scope, entries, ttl_ms=ttl_ms, source="operator",
                                      replace=True)  # fmt: skip
    for number, text in invalid[:SHOWN_INVALID]:
        _say(f"{args.file}:{number}: not an address: {text!r}")
    if len(invalid) > SHOWN_INVALID:
        _say(f"{args.file}: {len(invalid) - SHOWN_INVALID} more invalid lines")
    print(f"{args.file}: {written} added for {_for(scope)} ({written - fresh} were listed "
          f"already), {len(invalid)} invalid", file=out)  # fmt: skip
    return 1 if invalid else 0


Action = Callable[[SuppressionList, argparse.Namespace, TextIO], int]
_ACTIONS: dict[str, Action] = {"add": _add, "rm": _rm, "ls": _ls, "import": _import}
