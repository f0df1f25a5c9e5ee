#!/usr/bin/python3
"""Write the "gateway" scenario config: the template with 999 decoy routes.

Usage: gen_gateway.py TEMPLATE OUT NAME=VALUE...   (as fill.py, plus the
@DECOYS_BEFORE@ / @DECOYS_AFTER@ markers, which this script fills)

The decoys never match the benchmark request (GET /tiny with Host
127.0.0.1:PORT) but make the router do realistic work: five kinds in
rotation, so the table holds prefixes, templates, exact paths, host-bound
routes and prefixes that share the real route's first segment.
"""
import re
import sys

TOTAL_ROUTES = 1000  # decoys + the real one


def decoy(i):
    """YAML for decoy route number i (kind chosen by i mod 5)."""
    kind = i % 5
    name = "decoy-%04d" % i
    svc = "svc-%04d" % i
    if kind == 0:      # a service behind a versioned prefix
        match = "{path_prefix: /%s/v%d}" % (svc, i % 3 + 1)
    elif kind == 1:    # a templated resource path
        match = '{path_template: "/%s/items/{id}"}' % svc
    elif kind == 2:    # a host-bound route (another virtual host)
        match = "{hosts: [%s.example.internal], path_prefix: /}" % svc
    elif kind == 3:    # an exact path limited to some methods
        match = "{path: /%s/health, methods: [GET, HEAD]}" % svc
    else:              # shares /tiny with the real route, one segment deeper
        match = "{path_prefix: /tiny/%s}" % svc
    return "  - name: %s\n    match: %s\n    upstream: backend\n" % (name, match)


def main():
    src, out, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
    text = open(src).read()
    decoys = [decoy(i) for i in range(TOTAL_ROUTES - 1)]
    half = len(decoys) // 2
    text = text.replace("@DECOYS_BEFORE@\n", "".join(decoys[:half]))
    text = text.replace("@DECOYS_AFTER@\n", "".join(decoys[half:]))
    for pair in pairs:
        name, _, value = pair.partition("=")
        text = text.replace("@%s@" % name, value)
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        sys.exit("gen_gateway.py: no value for %s" % ", ".join(left))
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
