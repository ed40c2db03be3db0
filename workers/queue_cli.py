"""``mxfleet queue``: see and steer the queue (see :mod:`workers.queue_ops` for what each
action does in the spool). Tables for people, ``--json`` for scripts; an unknown message or
destination exits with 2.

```
mxfleet queue ls [--sort due|scheduled|oldest|domain] [--limit N] [--json]
mxfleet queue show QUEUE-ID [--json]
mxfleet queue pause|resume|flush DESTINATION
mxfleet queue retry|bounce|delete QUEUE-ID
mxfleet queue purge DESTINATION --yes
```
"""

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from typing import TextIO

from shared.redis_conn import sync_client
from shared.replies import Reply
from shared.settings import Settings
from workers import queue_ops, shaping
from workers.queue_ops import UnknownTarget, age
from workers.store import Job, Store

OPERATOR_BOUNCE = Reply(550, "5.0.0", "Returned to the sender by the mail administrator")
SORTS = {
    "due": lambda r: (-r.due, r.next_due_s, r.domain),
    "scheduled": lambda r: (-r.scheduled, r.domain),
    "oldest": lambda r: (-r.oldest_s, r.domain),
    "domain": lambda r: r.domain,
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("ls", help="domains with mail: scheduled, in flight, oldest, limits")
    ls.add_argument("--sort", choices=sorted(SORTS), default="due")
    ls.add_argument("--limit", type=int, default=0, help="show at most N rows")
    ls.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one message: envelope, each recipient's state")
    show.add_argument("queue_id")
    show.add_argument("--json", action="store_true")
    for name, summary in (
        ("pause", "stop delivering to a domain or destination"),
        ("resume", "deliver again"),
        ("flush", "make everything of a domain or destination due now"),
    ):
        sub.add_parser(name, help=summary).add_argument("destination")
    for name, summary in (
        ("retry", "make a message due now"),
        ("bounce", "return a message to its sender (DSN), then remove it"),
        ("delete", "remove a message without telling anyone"),
    ):
        sub.add_parser(name, help=summary).add_argument("queue_id")
    purge = sub.add_parser("purge", help="remove every message of a destination")
    purge.add_argument("destination")
    purge.add_argument("--yes", action="store_true", help="really")


def run(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    store = Store(sync_client(settings), settings.redis_key_prefix)
    try:
        return _ACTIONS[args.action](settings, store, args, out)
    except UnknownTarget as exc:
        print(f"mxfleet queue: {exc}", file=sys.stderr)
        return 2


def _ls(settings: Settings, store: Store, args: argparse.Namespace, out: TextIO) -> int:
    rows = sorted(queue_ops.list_domains(store, settings.policies), key=SORTS[args.sort])
    rows = rows[: args.limit] if args.limit > 0 else rows
    if args.json:
        print(json.dumps([dataclasses.asdict(row) for row in rows], indent=2), file=out)
        return 0
    header = ("DOMAIN", "SCHED", "DUE", "FLIGHT", "TRANS", "OLDEST", "NEXT", "CONN", "POLICY",
              "STATE", "DESTINATION")  # fmt: skip
    table: list[tuple[str, ...]] = [header]
    for r in rows:
        state = "paused" if r.paused else ("backoff" if r.factor < 1 else "")
        if r.factor < 1:
            state += f" x{r.factor:.2f}" + (f" {r.rate:g}/s" if r.rate else "")
        soon = "now" if r.next_due_s <= 0 else "in " + age(r.next_due_s)
        table.append((r.domain, str(r.scheduled), str(r.due), str(r.inflight),
                      str(r.transactional), age(r.oldest_s) if r.scheduled else "-",
                      soon if r.scheduled else "-", str(r.connections), r.policy, state or "-",
                      r.destination or "(not dispatched yet)"))  # fmt: skip
    _print_table(table, out)
    if not rows:
        print("(the queue is empty)", file=out)
    return 0


def _print_table(rows: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip(), file=out)


def _show(settings: Settings, store: Store, args: argparse.Namespace, out: TextIO) -> int:
    view = queue_ops.show(store, args.queue_id)
    if args.json:
        print(json.dumps(dataclasses.asdict(view), indent=2), file=out)
        return 0
    env = view.envelope
    received = int(env.get("received_ms", 0))
    print(f"message   {view.msg_id}", file=out)
    print(f"from      <{env.get('from', '')}>   size {env.get('size', '?')} bytes", file=out)
    print(f"class     {env.get('priority') or 'bulk'}", file=out)
    print(f"received  {queue_ops.now_iso(received)} from {env.get('client', '?')} "
          f"(helo {env.get('helo', '?')}, {env.get('proto', '')}"
          f"{', auth ' + env['auth'] if env.get('auth') else ''})", file=out)  # fmt: skip
    now_ms = store.now_ms()
    print(f"age       {age((now_ms - received) / 1000)}", file=out)
    for job in view.jobs:
        print(f"\n{job.domain}: {job.state}", file=out)
        if job.state == "finished":
            print("  every recipient delivered or bounced (see the events below)", file=out)
            continue
        when = (job.not_before_ms - now_ms) / 1000
        print(f"  attempts  {job.attempts}", file=out)
        print(f"  next try  {'now' if when <= 0 else 'in ' + age(when)}", file=out)
        print(f"  last reply  {job.last_reply or '(none yet)'}", file=out)
        for rcpt in job.pending:
            print(f"  pending   {rcpt}", file=out)
    if view.events:
        print("\nevents", file=out)
        for event in view.events:
            stamp = queue_ops.now_iso(int(event["event_id"].split("-")[0]))
            print(f"  {stamp}  {event.get('domain', '')}  attempt {event.get('attempt', '-')}  "
                  f"{event.get('verdict', '')}  {event.get('mx', '')}  {event.get('reply', '')}",
                  file=out)  # fmt: skip
    return 0


def _pause(settings: Settings, store: Store, args: argparse.Namespace, out: TextIO) -> int:
    return _switch(settings, store, args.destination, pause=True, out=out)


def _resume(settings: Settings, store: Store, args: argparse.Namespace, out: TextIO) -> int:
    return _switch(settings, store, args.destination, pause=False, out=out)


def _switch(settings: Settings, store: Store, name: str, *, pause: bool, out: TextIO) -> int:
    destination, _ = queue_ops.resolve_destination(store, settings.policies, name)
    if pause:
        said = "paused" if shaping.pause(store, destination) else "already paused"
    else:
        said = "resumed" if shaping.resume(store, destination) else "was not paused"
    print(f"{destination}: {said}", file=out)
    return 0


def _flush(settings: Settings, store: Store, args: argparse.Namespace, out: TextIO) -> int:
    destination, domains = queue_ops.resolve_destination(store, settings.policies, args.destination)
    moved = queue_ops.flush(store, domains)
    print(f"{destination}: {moved} jobs due now ({len(domains)} domains)", file=out)
    return 0


def _retry(settings: Settings, store: Store, args: argparse.Namespace, out: TextIO) -> int:
    moved = queue_ops.retry(store, args.queue_id)
    print(f"{args.queue_id}: {moved} jobs due now", file=out)
    return 0


def _delete(settings: Settings, store: Store, args: argparse.Namespace, out: TextIO) -> int:
    view = queue_ops.show(store, args.queue_id)
    count = sum(
        len(queue_ops.drop(store, view.msg_id, job.domain, "deleted", settings.events_maxlen))
        for job in view.jobs
    )
    print(f"{args.queue_id}: deleted ({count} recipients pending)", file=out)
    return 0


def _bounce(settings: Settings, store: Store, args: argparse.Namespace, out: TextIO) -> int:
    from workers.bounce_queue import enqueue_dsn  # the DSN machinery, only when needed
    from workers.context import build

    view = queue_ops.show(store, args.queue_id)
    env = view.envelope
    stored = store.client.get(store.keys.body(view.msg_id))
    body = stored if isinstance(stored, bytes) else b""
    failed = {rcpt: OPERATOR_BOUNCE for job in view.jobs for rcpt in job.pending}
    if failed:
        job = Job(view.msg_id, "", env.get("from", ""), env.get("smtputf8") == "1", 0,
                  int(env.get("received_ms", 0)), body, sorted(failed))  # fmt: skip
        dsn = enqueue_dsn(build(settings), job, failed, None)
        print(f"{args.queue_id}: DSN {dsn or '(none: null sender or a DSN)'} to "
              f"<{job.sender}> for {len(failed)} recipients", file=out)  # fmt: skip
    for pending in view.jobs:
        queue_ops.drop(store, view.msg_id, pending.domain, "bounced", settings.events_maxlen)
    print(f"{args.queue_id}: removed", file=out)
    return 0


def _purge(settings: Settings, store: Store, args: argparse.Namespace, out: TextIO) -> int:
    destination, domains = queue_ops.resolve_destination(store, settings.policies, args.destination)
    if not args.yes:
        which = ", ".join(domains) or "no domain"
        print(f"mxfleet queue: purge removes every message of {destination} ({which}) "
              "without a DSN; add --yes", file=sys.stderr)  # fmt: skip
        return 2
    dropped = queue_ops.purge(store, domains, settings.events_maxlen)
    print(f"{destination}: purged {dropped} jobs ({len(domains)} domains)", file=out)
    return 0


Action = Callable[[Settings, Store, argparse.Namespace, TextIO], int]
_ACTIONS: dict[str, Action] = {
    "ls": _ls, "show": _show, "pause": _pause, "resume": _resume, "flush": _flush,
    "retry": _retry, "bounce": _bounce, "delete": _delete, "purge": _purge,
}  # fmt: skip
