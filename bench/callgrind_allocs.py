"""Heap allocations per proxied request, from the two callgrind runs of callgrind.sh:
calls into jemalloc's entry points in the longer run minus the shorter one, over the
difference in requests, and which functions make them.

    python3 bench/callgrind_allocs.py SHORT.out LONG.out REQUESTS
"""

import collections
import re
import sys

ALLOC = ("_rjem_malloc", "_rjem_mallocx", "_rjem_calloc", "_rjem_realloc", "_rjem_rallocx")
FN = re.compile(r"^(c?fn)=\((\d+)\)(?: (.*))?$")


def calls(path):
    """{callee: {caller: calls}} from a callgrind output file (compressed names)."""
    names = {}
    out = collections.defaultdict(collections.Counter)
    caller = callee = None
    with open(path, errors="replace") as f:
        for line in f:
            m = FN.match(line.rstrip("\n"))
            if m:
                kind, ident, name = m.groups()
                if name:
                    names[ident] = name
                if kind == "fn":
                    caller = names.get(ident, ident)
                else:
                    callee = names.get(ident, ident)
            elif line.startswith("calls=") and callee:
                out[callee][caller] += int(line.split()[0][len("calls="):])
                callee = None
    return out


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    short, long_, requests = calls(sys.argv[1]), calls(sys.argv[2]), int(sys.argv[3])
    by_caller = collections.Counter()
    for fn in ALLOC:
        for caller, n in long_[fn].items():
            by_caller[caller] += n - short[fn].get(caller, 0)
    total = sum(by_caller.values()) / requests
    print(f"allocations per request: {total:.1f}")
    for caller, n in by_caller.most_common(12):
        if n / requests >= 0.05:
            print(f"  {n / requests:5.2f}  {caller[:120]}")


if __name__ == "__main__":
    main()
