/*
 * mb_parser.c — micro-benchmark of the HTTP/1.1 head parser and the
 * chunked pass the proxy runs on bodies, pt_chunked_strip (`make microbench`).
 *
 * The requests are what a gateway sees in practice: a browser navigation,
 * a browser XHR with cookies, and API clients (curl, an SDK with a bearer
 * token and trace headers), 300–500 bytes each. Each is parsed repeatedly
 * for about a second; MB/s counts head bytes parsed per second.
 */
#include "http/h1.h"

#include <stdio.h>

static const char *const requests[] = {
    "GET /products/42?ref=home HTTP/1.1\r\n"
    "Host: shop.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36\r\n"
    "Accept: "
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Accept-Language: en-US,en;q=0.9\r\n"
    "Cookie: session=3f2a9c1b7d; theme=dark\r\n"
    "Connection: keep-alive\r\n"
    "\r\n",

    "GET /api/cart/items HTTP/1.1\r\n"
    "Host: shop.example.com\r\n"
    "User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15\r\n"
    "Accept: application/json\r\n"
    "Referer: https://shop.example.com/products/42\r\n"
    "Origin: https://shop.example.com\r\n"
    "Cookie: session=3f2a9c1b7d; _ga=GA1.2.123456789.1700000000\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "\r\n",

    "POST /v1/orders HTTP/1.1\r\n"
    "Host: api.example.com\r\n"
    "Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 187\r\n"
    "Accept: application/json\r\n"
    "User-Agent: example-sdk-go/2.3.1\r\n"
    "X-Request-Id: 7b6e4f0c-2d1a-4c8e-9f3b-5a6d7e8f9a0b\r\n"
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    "\r\n",

    "GET /v2/users/12345/settings?fields=email,locale HTTP/1.1\r\n"
    "Host: api.example.com\r\n"
    "User-Agent: curl/8.5.0\r\n"
    "Accept: */*\r\n"
    "X-Api-Key: 9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a\r\n"
    "X-Forwarded-For: 203.0.113.7, 198.51.100.23\r\n"
    "X-Forwarded-Proto: https\r\n"
    "If-None-Match: \"5d8c72a5edda8d6a\"\r\n"
    "Cache-Control: no-cache\r\n"
    "Accept-Encoding: gzip\r\n"
    "\r\n",

    "GET /static/js/app.3f9c2b.js HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n"
    "sec-ch-ua-mobile: ?0\r\n"
    "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36\r\n"
    "sec-ch-ua-platform: \"Windows\"\r\n"
    "Accept: */*\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "Sec-Fetch-Mode: no-cors\r\n"
    "Sec-Fetch-Dest: script\r\n"
    "Referer: https://www.example.com/\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "\r\n",
};

#define NREQ (sizeof requests / sizeof requests[0])

static volatile uint64_t sink;

static double seconds_since(uint64_t t0)
{
    return (double)(pt_now_ns() - t0) / 1e9;
}

static int bench_heads(void)
{
    struct pt_h1_header headers[64];
    const struct pt_h1_limits lim = {
        .max_headers = 64, .max_header_bytes = 16384, .max_uri_bytes = 8192};
    size_t lens[NREQ], total = 0, shortest = SIZE_MAX, longest = 0;
    for (size_t i = 0; i < NREQ; i++) {
        struct pt_h1_request req;
        lens[i] = strlen(requests[i]);
        total += lens[i];
        shortest = PT_MIN(shortest, lens[i]);
        longest = PT_MAX(longest, lens[i]);
        if (pt_h1_parse_request(requests[i], lens[i], 0, &req, headers, &lim) != (int)lens[i]) {
            fprintf(stderr, "bench_parser: request %zu does not parse: %s\n", i,
                    req.error_reason ? req.error_reason : "incomplete");
            return 1;
        }
    }

    uint64_t iters = 0, bytes = 0, acc = 0;
    uint64_t t0 = pt_now_ns();
    do {
        for (int rep = 0; rep < 1000; rep++) {
            for (size_t i = 0; i < NREQ; i++) {
                struct pt_h1_request req;
                acc += (uint64_t)pt_h1_parse_request(requests[i], lens[i], 0, &req, headers, &lim);
                acc += req.num_headers;
            }
        }
        iters += 1000 * NREQ;
        bytes += 1000 * total;
    } while (seconds_since(t0) < 1.0);
    double secs = seconds_since(t0);
    sink = acc;
    printf("parser: %zu requests of %zu..%zu bytes (avg %zu): %.0f MB/s, %.1f ns/request\n", NREQ,
           shortest, longest, total / NREQ, (double)bytes / secs / 1e6, secs * 1e9 / (double)iters);
    return 0;
}

/* Builds a chunked body of `nchunks` chunks of `size` bytes. */
static size_t build_chunked(char *out, size_t nchunks, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < nchunks; i++) {
        n += pt_chunked_size_line(out + n, size);
        memset(out + n, 'x', size);
        n += size;
        memcpy(out + n, "\r\n", 2);
        n += 2;
    }
    memcpy(out + n, "0\r\n\r\n", 5);
    return n + 5;
}

static int bench_chunked(size_t nchunks, size_t size)
{
    static char body[1 << 20];
    size_t len = build_chunked(body, nchunks, size);
    uint64_t bytes = 0, acc = 0, rounds = 0;
    uint64_t t0 = pt_now_ns();
    do {
        for (int rep = 0; rep < 16; rep++) {
            struct pt_chunked c;
            bool done;
            pt_chunked_init(&c);
            /* The proxy's pass: framing checked, trailers (none here) dropped. */
            size_t kept;
            ssize_t r = pt_chunked_strip(&c, body, len, &kept, &done);
            if (r != (ssize_t)len || kept != len || !done) {
                fprintf(stderr, "bench_parser: chunked body does not strip\n");
                return 1;
            }
            acc += (uint64_t)r;
        }
        bytes += 16 * len;
        rounds += 16;
    } while (seconds_since(t0) < 0.5);
    double secs = seconds_since(t0);
    sink = acc;
    printf("chunked strip: %zu x %zu-byte chunks: %.0f MB/s, %.1f ns/chunk\n", nchunks, size,
           (double)bytes / secs / 1e6, secs * 1e9 / (double)(rounds * nchunks));
    return 0;
}

int bench_parser(void)
{
    int rc = bench_heads();
    rc |= bench_chunked(256, 4096);
    rc |= bench_chunked(4096, 64);
    return rc;
}
