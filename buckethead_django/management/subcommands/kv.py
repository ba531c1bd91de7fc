"""``manage.py buckethead kv``: inspect and change KV entries."""

from __future__ import annotations

import base64
import datetime as dt
import time

from django.core.management.base import CommandError, CommandParser

from ...engine import BucketSQLite
from .. import display
from ..bucket import as_of, refuse
from .base import Options, Subcommand, SubparsersAction, add_parser, positive_float, positive_int, subcommand_group
from .describe import CHANGE_INSTEAD, as_of_clause


class KV(Subcommand):
    """`manage.py buckethead kv`: inspect and change KV entries."""

    def add_to(self, commands: SubparsersAction, parser: CommandParser) -> None:
        kv = add_parser(commands, parser, "kv", "Inspect and change KV entries.")
        kv_commands = subcommand_group(kv, "kv_command")
        kv_list = add_parser(kv_commands, kv, "list", "Keys, their sizes and expiry times, sorted.", self.kv_list)
        kv_list.add_argument("--prefix", default="", help="Only keys starting with this text.")
        kv_list.add_argument("--limit", type=positive_int, default=100, metavar="N", help="At most N keys (100).")
        kv_get = add_parser(
            kv_commands, kv, "get", "Print one value (as UTF-8 text unless told otherwise).", self.kv_get
        )
        kv_get.add_argument("key", metavar="KEY")
        encoding = kv_get.add_mutually_exclusive_group()
        for name, what in (("bytes", "raw bytes"), ("hex", "hexadecimal"), ("base64", "base64")):
            encoding.add_argument(
                f"--{name}", dest="encoding", action="store_const", const=name, help=f"Print the value as {what}."
            )
        kv_set = add_parser(kv_commands, kv, "set", "Set a key to a text value and flush.", self.kv_set)
        kv_set.add_argument("key", metavar="KEY")
        kv_set.add_argument("value", metavar="VALUE")
        kv_set.add_argument("--ttl", type=positive_float, metavar="SECONDS", help="Expire after SECONDS.")
        kv_delete = add_parser(kv_commands, kv, "delete", "Delete a key and flush.", self.kv_delete)
        kv_delete.add_argument("key", metavar="KEY")

    def kv_list(self, options: Options) -> None:
        engine = self._reader(options)
        keys = engine.kv.keys(options["prefix"])
        shown = keys[: options["limit"]]
        values = engine.kv.get_many_bytes(shown)
        entries = [
            {"key": key, "size": len(values.get(key, b"")), "expires_at": _expires_at(engine, key)} for key in shown
        ]
        rows = [
            (e["key"], display.size(e["size"]), display.relative(e["expires_at"]) if e["expires_at"] else "never")
            for e in entries
        ]
        lines = display.table(("KEY", "SIZE", "EXPIRES"), rows) if rows else []
        more = " (use --limit to see more)" if len(keys) > len(shown) else ""
        lines.append(f"{len(shown)} of {len(keys)} keys{more}")
        data = {"as_of": as_of(engine), "prefix": options["prefix"], "total": len(keys), "keys": entries}
        self._emit(options, data, lines)

    def kv_get(self, options: Options) -> None:
        key: str = options["key"]
        encoding: str = options["encoding"] or "text"
        if encoding == "bytes" and options["json"]:
            raise CommandError("--bytes prints the raw value and cannot be combined with --json; use --base64")
        engine = self._reader(options)
        value = engine.kv.get_bytes(key)
        if value is None:
            raise CommandError(f"there is no KV key {key!r}{as_of_clause(engine)}")
        if encoding == "bytes":
            self._write_bytes(value)
            return
        if encoding == "text":
            try:
                shown = value.decode("utf-8")
            except UnicodeDecodeError:
                if options["json"]:  # a script gets every value: one that is not text comes as base64, and says so
                    encoding = "base64"
                    shown = base64.b64encode(value).decode("ascii")
                else:
                    raise CommandError(
                        f"the value of {key!r} is not UTF-8 text ({display.size(len(value))}); "
                        "show it with --hex, --base64 or --bytes (with --json it comes base64-encoded)"
                    ) from None
        else:
            shown = value.hex() if encoding == "hex" else base64.b64encode(value).decode("ascii")
        data = {
            "key": key,
            "value": shown,
            "encoding": encoding,
            "size": len(value),
            "expires_at": _expires_at(engine, key),
            "as_of": as_of(engine),
        }
        self._emit(options, data, [shown])

    def _write_bytes(self, value: bytes) -> None:
        buffer = getattr(self.stdout, "buffer", None)  # OutputWrapper passes attributes through to its stream
        if buffer is None:
            raise CommandError("--bytes needs a binary standard output; use --base64 or --hex")
        self.stdout.flush()
        buffer.write(value)
        buffer.flush()

    def kv_set(self, options: Options) -> None:
        key, value, ttl = options["key"], options["value"], options["ttl"]
        bucket = self._bucket()
        with bucket.writer(refuse(f"set KV key {key!r}", CHANGE_INSTEAD)) as engine:
            engine.kv.set(key, value, ttl=ttl)
            expires_at = _expires_at(engine, key)
        expiry = f", expires {display.relative(expires_at)}" if expires_at else ""
        size = len(value.encode("utf-8"))
        line = f"Set {key!r} ({display.size(size)}{expiry}) and flushed it to {bucket.describe()}."
        data = {"key": key, "size": size, "expires_at": expires_at}
        self._emit(options, data, [self.style.SUCCESS(line)], report=True)

    def kv_delete(self, options: Options) -> None:
        key = options["key"]
        bucket = self._bucket()
        with bucket.writer(refuse(f"delete KV key {key!r}", CHANGE_INSTEAD)) as engine:
            if not engine.kv.delete(key):
                raise CommandError(f"there is no KV key {key!r} in {bucket.describe()}; nothing was changed")
        line = f"Deleted {key!r} and flushed the change to {bucket.describe()}."
        self._emit(options, {"key": key, "deleted": True}, [self.style.SUCCESS(line)], report=True)


def _expires_at(engine: BucketSQLite, key: str) -> dt.datetime | None:
    try:
        ttl = engine.kv.ttl(key)
    except KeyError:  # expired a moment ago
        return None
    return None if ttl is None else display.utc(time.time() + ttl)
