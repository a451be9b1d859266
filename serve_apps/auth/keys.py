"""API keys and their stored form.

A key is 32 random bytes (`rsk_<urlsafe base64>`); only its SHA-256 is stored. A slow
password hash buys nothing for keys with 256 bits of entropy, and SHA-256 keeps the
check cheap on every request.
"""

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

KEY_PREFIX = "rsk_"
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
KEY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class KeyFileError(ValueError):
    """The key file is missing, unreadable or malformed."""


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_key_hashes(document: object) -> dict[str, str]:
    """Validate `{name: sha256-hex}` (a `sha256:` prefix is accepted) into name -> hex."""
    if not isinstance(document, Mapping) or not document:
        raise KeyFileError("the key file must be a non-empty JSON object {name: sha256 hex}")
    hashes: dict[str, str] = {}
    for name, value in document.items():
        if not isinstance(name, str) or not KEY_NAME_PATTERN.fullmatch(name):
            raise KeyFileError(f"key name {name!r} must match {KEY_NAME_PATTERN.pattern}")
        digest = value.removeprefix("sha256:").lower() if isinstance(value, str) else ""
        if isinstance(value, str) and value.startswith(KEY_PREFIX):
            raise KeyFileError(
                f"key '{name}': the value is a raw API key, not its hash; store the output "
                "of `python -m serve_apps.auth hash` (and treat that key as leaked)"
            )
        if not _HEX_DIGEST.fullmatch(digest):
            raise KeyFileError(f"key '{name}': the value must be a SHA-256 hex digest")
        hashes[name] = digest
    return hashes


def read_key_file(path: Path) -> dict[str, str]:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    return parse_key_file(content, path)


def parse_key_file(content: bytes, path: Path) -> dict[str, str]:
    """The named hashes of a key file's bytes (`path` only names it in errors)."""
    try:
        document = json.loads(content.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{path} is not JSON: {exc.msg}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path} is not UTF-8 text") from None
    return parse_key_hashes(document)


def match_key(presented: str, hashes: Mapping[str, str]) -> str | None:
    """The name of the key whose hash matches, compared in constant time, else None."""
    digest = hash_key(presented)
    found = None
    for name, stored in hashes.items():
        # Every stored hash is compared, so timing does not tell which one matched.
        if hmac.compare_digest(digest, stored):
            found = name
    return found
