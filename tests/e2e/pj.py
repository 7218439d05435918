#!/usr/bin/env python3
"""Evaluate a Python expression over JSON read from stdin (a tiny jq for the e2e scripts).

    pinhole stats --json | pj.py 'g("engine.drops.default_deny")'
    pinhole sessions --json | pj.py -t 'any(s["sport"] == 40000 for s in data)'

In the expression, `data` is the parsed document and g(PATH, DEFAULT=0) looks up a dotted
path (missing keys and nulls give DEFAULT). The result is printed (JSON for lists and dicts).
With -t nothing is printed and the exit status is 0 when the result is true, 1 otherwise.
Unparsable input is exit status 2.
"""

import json
import sys


def main():
    args = sys.argv[1:]
    test = bool(args) and args[0] == "-t"
    if test:
        args = args[1:]
    if len(args) != 1:
        sys.exit(__doc__)
    try:
        data = json.load(sys.stdin)
    except ValueError as e:
        print("pj.py: input is not JSON: %s" % e, file=sys.stderr)
        return 2

    def g(path, default=0):
        node = data
        for key in path.split("."):
            if isinstance(node, dict) and node.get(key) is not None:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return default
        return node

    try:
        result = eval(args[0], {"data": data, "g": g})  # noqa: S307 - test-only helper
    except Exception as e:  # noqa: BLE001
        print("pj.py: %r" % e, file=sys.stderr)
        return 2
    if test:
        return 0 if result else 1
    print(json.dumps(result) if isinstance(result, (dict, list)) else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
