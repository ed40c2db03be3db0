"""``mxfleet ingress``: one ingress node, in one process or several sharing the port."""

import asyncio
import logging
import multiprocessing
import signal
import time
from types import FrameType

from ingress.dkim_sign import IngressSigner, load_signer
from ingress.limits import SessionTable
from ingress.listener import raise_fd_limit
from ingress.server import serve
from shared import log
from shared.dkim_keys import DkimKeyError
from shared.settings import Settings

logger = logging.getLogger("mxfleet.ingress")


def _loop_factory() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_process(
    settings: Settings, limits: SessionTable, index: int, signer: IngressSigner
) -> None:
    limits.use_row(index)
    with asyncio.Runner(loop_factory=_loop_factory) as runner:
        runner.run(serve(settings, limits, index, signer))


def main(settings: Settings) -> int:
    try:
        signer = load_signer(settings)  # once, before the fork: a bad key stops the node here
    except DkimKeyError as exc:
        log.event(logger, "dkim_keys_invalid", logging.ERROR, error=exc)
        return 2
    raise_fd_limit(settings.max_sessions)  # before the fork: every process inherits it
    limits = SessionTable(
        settings.max_sessions, settings.max_sessions_per_ip, settings.ingress_processes
    )
    if settings.ingress_processes == 1:
        run_process(settings, limits, 0, signer)
        return 0
    return _supervise(settings, limits, signer)


def _supervise(settings: Settings, limits: SessionTable, signer: IngressSigner) -> int:
    """Run ``ingress_processes`` children; restart one that dies; pass SIGTERM on."""
    ctx = multiprocessing.get_context("fork")
    children: dict[int, multiprocessing.process.BaseProcess] = {}
    stopping = False

    def start(index: int) -> None:
        child = ctx.Process(
            target=run_process, args=(settings, limits, index, signer), daemon=False
        )
        child.start()
        children[index] = child

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.pid is not None and child.is_alive():
                child.terminate()  # SIGTERM: each child drains on its own

    for index in range(settings.ingress_processes):
        start(index)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        for index, child in list(children.items()):
            child.join(timeout=0.2)
            if child.is_alive() or stopping:
                continue
            log.event(logger, "child_died", logging.ERROR, index=index, code=child.exitcode)
            limits.clear_row(index)  # its sessions died with it
            time.sleep(0.5)
            start(index)
        if stopping and not any(child.is_alive() for child in children.values()):
            return 0
