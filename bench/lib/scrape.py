#!/usr/bin/python3
"""The observability section's scrape helper.

  scrape.py fill PORT N          one GET /rI/tiny on each of N routes (keep-alive)
  scrape.py time ADMIN_PORT K    K scrapes of /metrics one after the other;
                                 prints "ms_first=.. ms_p50=.. ms_max=.. bytes=..
                                 series=.." (p50 and max over the K-1 after the
                                 first, which is the process's cold one)
  scrape.py loop ADMIN_PORT S    scrapes every 100 ms for S seconds; prints
                                 "scrapes=.. ms_max=.."
"""
import http.client
import sys
import time


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit("GET %s: %d" % (path, r.status))
    return body


def scrape(port):
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    t0 = time.perf_counter()
    body = get(c, "/metrics")  # the admin API closes after each answer
    ms = (time.perf_counter() - t0) * 1000
    c.close()
    return ms, body


def main():
    mode, port, n = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "fill":
        c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
        for i in range(int(n)):
            get(c, "/r%d/tiny" % i)
        return
    if mode == "time":
        first, _ = scrape(port)
        times, body = [], b""
        for _ in range(max(1, int(n) - 1)):
            ms, body = scrape(port)
            times.append(ms)
        times.sort()
        series = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
        print("ms_first=%.2f ms_p50=%.2f ms_max=%.2f bytes=%d series=%d" %
              (first, times[len(times) // 2], times[-1], len(body), series))
        return
    end = time.monotonic() + float(n)
    k, worst = 0, 0.0
    while time.monotonic() < end:
        ms, _ = scrape(port)
        worst = max(worst, ms)
        k += 1
        time.sleep(0.1)
    print("scrapes=%d ms_max=%.2f" % (k, worst))


if __name__ == "__main__":
    main()
