#!/usr/bin/python3
"""Fill a bench/conf template: replace @NAME@ with values given as NAME=VALUE.

Usage: fill.py TEMPLATE OUT NAME=VALUE...

Fails if the template still has an @NAME@ nobody gave a value for, so a
typo in a template cannot silently produce a broken config.
"""
import re
import sys


def main():
    src, out, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
    text = open(src).read()
    for pair in pairs:
        name, _, value = pair.partition("=")
        text = text.replace("@%s@" % name, value)
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        sys.exit("fill.py: %s: no value for %s" % (src, ", ".join(left)))
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
