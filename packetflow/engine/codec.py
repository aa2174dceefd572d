"""Wire format: the record value is the intent as JSON; headers carry type, version and context.

Headers: ``pf-type`` (stable type name), ``pf-version`` (schema version),
``content-type`` (``application/json``) and ``pf-context`` (the context as JSON, including the
held capabilities). Decoding failures raise :class:`Rejected` with a reason code that the
engine writes, with the original bytes, to the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import ValidationError

from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.engine.transport import Headers, Record

TYPE_HEADER = "pf-type"
VERSION_HEADER = "pf-version"
CONTEXT_HEADER = "pf-context"
CONTENT_TYPE_HEADER = "content-type"
JSON = b"application/json"

DEFAULT_MAX_RECORD_BYTES = 1024 * 1024


class Rejected(Exception):
    """A record that cannot become an intent; ``reason`` is a short code, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def encode(intent: Intent, context: Context) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The record value and headers for ``intent`` sent with ``context``."""
    cls = type(intent)
    return intent.model_dump_json().encode(), [
        (TYPE_HEADER, cls.intent_type.encode()),
        (VERSION_HEADER, str(cls.intent_version).encode()),
        (CONTENT_TYPE_HEADER, JSON),
        (CONTEXT_HEADER, context.model_dump_json(exclude_defaults=True).encode()),
    ]


def encode_key(key: str | None) -> bytes | None:
    return None if key is None else key.encode()


class Decoder:
    """Turns records into (intent, context) for a known set of intent types."""

    def __init__(
        self,
        types: Mapping[str, type[Intent]],
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        default_type: type[Intent] | None = None,
    ) -> None:
        self.types = dict(types)
        self.max_record_bytes = max_record_bytes
        self.default_type = default_type

    def decode(self, record: Record) -> tuple[Intent, Context]:
        value = record.value
        if value is None:
            raise Rejected("empty", "record has no value")
        size = len(value) + sum(len(v or b"") for _, v in record.headers)
        if size > self.max_record_bytes:
            raise Rejected(
                "oversized", f"record is {size} bytes, the limit is {self.max_record_bytes}"
            )
        type_name = version = context_raw = None
        for name, raw in record.headers:
            if name == TYPE_HEADER:
                type_name = raw
            elif name == VERSION_HEADER:
                version = raw
            elif name == CONTEXT_HEADER:
                context_raw = raw
        cls = self._intent_class(type_name)
        if version is not None:
            try:
                v = int(version)
            except ValueError:
                raise Rejected("bad-header", f"{VERSION_HEADER} is not an integer") from None
            if v > cls.intent_version:
                raise Rejected(
                    "schema-version",
                    f"{cls.intent_type} v{v} is newer than this worker's v{cls.intent_version}",
                )
        try:
            context = Context.model_validate_json(context_raw) if context_raw else Context.new()
        except ValidationError as exc:
            raise Rejected("bad-context", f"{CONTEXT_HEADER}: {_summary(exc)}") from None
        try:
            intent = cls.model_validate_json(value)
        except ValidationError as exc:
            kind = (
                "decode" if any(e["type"] == "json_invalid" for e in exc.errors()) else "validation"
            )
            raise Rejected(kind, f"{cls.intent_type}: {_summary(exc)}") from None
        return intent, context

    def _intent_class(self, type_name: bytes | None) -> type[Intent]:
        if type_name is None:
            if self.default_type is not None:
                return self.default_type
            raise Rejected("missing-type", f"record has no {TYPE_HEADER} header")
        try:
            name = type_name.decode()
        except UnicodeDecodeError:
            raise Rejected("bad-header", f"{TYPE_HEADER} is not UTF-8") from None
        cls = self.types.get(name)
        if cls is None:
            raise Rejected("unknown-type", f"no reactor here takes intent type {name!r}")
        return cls


def _summary(exc: ValidationError) -> str:
    """A validation error on one line: ``field: message; field: message``."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def header(headers: Headers, name: str) -> bytes | None:
    """The last value of header ``name``, or None."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found


def with_headers(headers: Headers, extra: Iterable[tuple[str, str]]) -> list[tuple[str, bytes]]:
    return [*headers, *((k, v.encode()) for k, v in extra)]
