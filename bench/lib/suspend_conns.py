#!/usr/bin/python3
"""Hold N requests suspended in the gateway at once (issue 12).

Usage: suspend_conns.py PORT N PATH TIMEOUT_S

1. opens N connections to 127.0.0.1:PORT, 200 at a time, sends nothing,
   prints "open N";
2. waits for SIGUSR1 from the driver (at most 60 s), then writes one
   `GET PATH` on every connection and prints "sent N" once all are
   written;
3. reads every response (at most TIMEOUT_S seconds from the send) and
   prints "done ok=K fail=F first_ms=A last_ms=B": K answered 200,
   A/B the earliest and latest answer after the send (with a fault delay
   of D on PATH, A >= D shows every request was held the whole delay).
Exits 1 on any connect failure. Loopback only.
"""
import asyncio
import collections
import signal
import sys
import time

BATCH = 200


async def read_one(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status, time.monotonic()


async def main():
    port, total, path, timeout = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, go.set)
    conns = []
    try:
        while len(conns) < total:
            n = min(BATCH, total - len(conns))
            conns += await asyncio.gather(
                *[asyncio.open_connection("127.0.0.1", port, limit=1 << 16) for _ in range(n)])
    except OSError as e:
        print("failed after %d connections: %s" % (len(conns), e), flush=True)
        sys.exit(1)
    print("open %d" % len(conns), flush=True)
    await asyncio.wait_for(go.wait(), 60)
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode()
    t0 = time.monotonic()
    for _, w in conns:
        w.write(req)
    await asyncio.gather(*(w.drain() for _, w in conns))
    print("sent %d %.0f" % (len(conns), (time.monotonic() - t0) * 1000), flush=True)
    results = await asyncio.wait_for(
        asyncio.gather(*(read_one(r) for r, _ in conns), return_exceptions=True), timeout)
    ok = [t for x in results if not isinstance(x, BaseException) for s, t in [x] if s == 200]
    fail = len(results) - len(ok)
    kinds = collections.Counter(
        type(x).__name__ if isinstance(x, BaseException) else str(x[0]) for x in results)
    first = (min(ok) - t0) * 1000 if ok else -1
    last = (max(ok) - t0) * 1000 if ok else -1
    print("done ok=%d fail=%d first_ms=%.0f last_ms=%.0f" % (len(ok), fail, first, last),
          flush=True)
    print("outcomes %s" % " ".join("%s:%d" % kv for kv in sorted(kinds.items())), flush=True)
    for _, w in conns:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
