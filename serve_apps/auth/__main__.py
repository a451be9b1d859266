"""`python -m serve_apps.auth new-key NAME`: a new API key and the hash to store.

`python -m serve_apps.auth hash` reads a key on stdin and prints its hash.
"""

import argparse
import json
import sys

from serve_apps.auth.keys import KEY_NAME_PATTERN, hash_key, new_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_apps.auth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("new-key", help="create a key; print it and its hash")
    create.add_argument("name", help="a name for the key, e.g. team-search-2026-11")
    commands.add_parser("hash", help="print the hash of a key read from stdin")
    args = parser.parse_args(argv)
    if args.command == "hash":
        key = sys.stdin.readline().strip()
        if not key:
            parser.error("no key on stdin")
        print(hash_key(key))
        return 0
    if not KEY_NAME_PATTERN.fullmatch(args.name):
        parser.error(f"name must match {KEY_NAME_PATTERN.pattern}")
    key = new_key()
    print(f"key (give to the client; it is not stored anywhere): {key}")
    print(f"hash entry (store in the API key secret): {json.dumps({args.name: hash_key(key)})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
