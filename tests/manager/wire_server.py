"""A mongoeco wire-protocol server on SQLite for the manager tests (run by .venv-mongo's Python 3.13).

mongoeco speaks the MongoDB wire protocol over TCP; it is not MongoDB. Prints ``PORT <n>``
once listening on 127.0.0.1, and stops on SIGTERM/SIGINT, when its parent process is gone,
or after ``--max-seconds``.
"""

import argparse
import asyncio
import os
import signal

from mongoeco.engines.sqlite import SQLiteEngine
from mongoeco.wire import AsyncMongoEcoProxyServer


async def serve(db: str, port: int, parent: int, max_seconds: float) -> None:
    server = AsyncMongoEcoProxyServer(engine=SQLiteEngine(db), host="127.0.0.1", port=port)
    address = await server.start()
    print(f"PORT {address.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deadline = loop.time() + max_seconds
    try:
        while not stop.is_set() and loop.time() < deadline and os.getppid() == parent:
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True, help="SQLite file")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    asyncio.run(serve(args.db, args.port, args.parent_pid, args.max_seconds))


if __name__ == "__main__":
    main()
