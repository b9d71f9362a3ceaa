"""A service like the one of the incident: an asyncpg pool sized by DB_POSTGRES_MIN_CONN /
DB_POSTGRES_MAX_CONN (read once, at start), kept busy by as many workers as the pool may hold.

Logs one line per event, for tests and people alike:
  pool min=5 max=25 source=env          the pool's bounds and where they came from
  stats ok=120 errors=0 pool=25         every 5 s: queries done, errors, open connections
  error <Class>: <message>              every failed connect or query, as PostgreSQL said it

Connection settings: DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD; DB_POSTGRES_HOST and
DB_POSTGRES_PORT, when set (the operator sets them to its PgBouncer's Service for the apps of a
`via: Pooler` policy), take the place of DB_HOST and DB_PORT. The pool line names the address:
  pool min=5 max=25 source=env to=pgbouncer.demo.svc:6432
"""

import asyncio
import os
import signal
import socket

import asyncpg

DEFAULT_POOL = 10  # the hard-coded pool of the incident, when nothing is injected


def pool_bounds():
    raw_min, raw_max = os.environ.get("DB_POSTGRES_MIN_CONN"), os.environ.get("DB_POSTGRES_MAX_CONN")
    if raw_min is None or raw_max is None:
        return DEFAULT_POOL, DEFAULT_POOL, "default"
    return int(raw_min), int(raw_max), "env"


def address():
    host = os.environ.get("DB_POSTGRES_HOST") or os.environ["DB_HOST"]
    port = os.environ.get("DB_POSTGRES_PORT") or os.environ.get("DB_PORT", "5432")
    return host, int(port)


async def open_pool(min_size, max_size):
    host, port = address()
    while True:
        try:
            return await asyncpg.create_pool(
                host=host,
                port=port,
                database=os.environ["DB_NAME"],
                user=os.environ["DB_USER"],
                password=os.environ["DB_PASSWORD"],
                min_size=min_size,
                max_size=max_size,
                server_settings={"application_name": socket.gethostname()},
            )
        except Exception as err:  # connect failures: report and retry, as a service would
            print(f"error {type(err).__name__}: {err}", flush=True)
            await asyncio.sleep(2)


async def worker(pool, counters, stop):
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_sleep(0.2)")
            counters["ok"] += 1
        except Exception as err:
            counters["errors"] += 1
            print(f"error {type(err).__name__}: {err}", flush=True)
            await asyncio.sleep(1)


async def main():
    min_size, max_size, source = pool_bounds()
    host, port = address()
    print(f"pool min={min_size} max={max_size} source={source} to={host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = await open_pool(min_size, max_size)
    counters = {"ok": 0, "errors": 0}
    workers = [asyncio.create_task(worker(pool, counters, stop)) for _ in range(max_size)]
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=5)
        except asyncio.TimeoutError:
            pass
        print(f"stats ok={counters['ok']} errors={counters['errors']} pool={pool.get_size()}", flush=True)
    await asyncio.gather(*workers)
    await pool.close()
    print("stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
