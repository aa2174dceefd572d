"""Wire format: the record value is the intent as JSON; headers carry type, version and context.

Headers: ``pf-type`` (stable type name), ``pf-version`` (schema version),
``content-type`` (``application/json``), ``pf-context`` (the context as JSON: ids, principal,
deadline, reply-to, trace, baggage), and the sender's authority: ``pf-token`` (a signed
capability token, see ``packetflow.core.tokens``) or, without a token, ``pf-capabilities`` (a
JSON list of ``"operation:resource"``, honoured only by topologies that accept unsigned
capabilities). Both travel apart from the context because they repeat from record to record:
both directions cache them by value. Decoding failures raise :class:`Rejected` with a
reason code that the engine writes, with the original bytes, to the dead-letter topic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from packetflow.core.capability import Capability
from packetflow.core.context import Context, new_id, new_span_id
from packetflow.core.intent import Intent
from packetflow.engine.transport import Headers, Record

TYPE_HEADER = "pf-type"
VERSION_HEADER = "pf-version"
CONTEXT_HEADER = "pf-context"
CAPABILITIES_HEADER = "pf-capabilities"
TOKEN_HEADER = "pf-token"
MAC_HEADER = "pf-mac"  # a worker's seal on an internal intent (see engine.seal)
CONTENT_TYPE_HEADER = "content-type"
JSON = b"application/json"

# Why a record was set aside (dead letters, denied, late, dropped): added to its headers.
REASON_HEADER = "pf-reason"
ERROR_HEADER = "pf-error"
SOURCE_HEADER = "pf-source"
REACTOR_HEADER = "pf-reactor"
MISSING_HEADER = "pf-missing"
# A set-aside copy too large for its topic is kept truncated, with what it was.
TRUNCATED_HEADER = "pf-truncated"
ORIGINAL_SIZE_HEADER = "pf-original-size"
SHA256_HEADER = "pf-sha256"
# What the window and backpressure agents add to the records they set aside.
EVENT_TIME_HEADER = "pf-event-time"
WATERMARK_HEADER = "pf-watermark"
STRATEGY_HEADER = "pf-strategy"
# Every header the engine adds when it sets a record aside (taken off again to replay it).
SET_ASIDE_HEADERS = frozenset(
    {
        REASON_HEADER, ERROR_HEADER, SOURCE_HEADER, REACTOR_HEADER, MISSING_HEADER,
        TRUNCATED_HEADER, ORIGINAL_SIZE_HEADER, SHA256_HEADER, EVENT_TIME_HEADER,
        WATERMARK_HEADER, STRATEGY_HEADER,
    }
)
# A replayed record: ``topic/partition/offset`` of the set-aside copy it was made from.
REPLAY_OF_HEADER = "pf-replay-of"

DEFAULT_MAX_RECORD_BYTES = 1024 * 1024


class Rejected(Exception):
    """A record that cannot become an intent; ``reason`` is a short code, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


_CACHE_LIMIT = 10_000
_encoded_caps: dict[int, tuple[tuple[Capability, ...], bytes]] = {}
_decoded_caps: dict[bytes, tuple[Capability, ...]] = {}
_fixed_headers: dict[type[Intent], tuple[tuple[str, bytes], ...]] = {}
_last_token: tuple[str, bytes] = ("", b"")


def encode(intent: Intent, context: Context) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The record value and headers for ``intent`` sent with ``context``."""
    headers = [*fixed_headers(type(intent)), (CONTEXT_HEADER, encode_context(context))]
    authority = authority_header(context)
    if authority is not None:
        headers.append(authority)
    return intent.model_dump_json().encode(), headers


def fixed_headers(cls: type[Intent]) -> tuple[tuple[str, bytes], ...]:
    """What every record of intent type ``cls`` carries: ``pf-type``, ``pf-version`` and
    ``content-type`` (made once per type)."""
    fixed = _fixed_headers.get(cls)
    if fixed is None:
        fixed = _fixed_headers[cls] = (
            (TYPE_HEADER, cls.intent_type.encode()),
            (VERSION_HEADER, str(cls.intent_version).encode()),
            (CONTENT_TYPE_HEADER, JSON),
        )
    return fixed


def authority_header(context: Context) -> tuple[str, bytes] | None:
    """The sender's authority as it travels: ``pf-token`` for a token, else
    ``pf-capabilities`` for plain capabilities, else None."""
    global _last_token
    token = context.token
    if token:
        if token is not _last_token[0]:  # one token per sender: the last one is kept
            _last_token = (token, token.encode())
        return (TOKEN_HEADER, _last_token[1])
    if context.capabilities:
        return (CAPABILITIES_HEADER, encode_capabilities(context.capabilities))
    return None


def encode_context(context: Context) -> bytes:
    """``pf-context``: every context field but capabilities, leaving out empty ones."""
    d = context.__dict__
    fields: dict[str, Any] = {
        "intent_id": d["intent_id"],
        "trace_id": d["trace_id"],
        "span_id": d["span_id"],
    }
    for name in _OPTIONAL_CONTEXT_FIELDS:
        value = d[name]
        if value:
            fields[name] = value
    deadline = d["deadline"]
    if deadline is not None:
        fields["deadline"] = deadline.isoformat()
    return orjson.dumps(fields)


_OPTIONAL_CONTEXT_FIELDS = (
    "parent_span_id",
    "causation_id",
    "correlation_id",
    "principal",
    "reply_to",
    "requester",
    "trace",
    "baggage",
)


def encode_inherited(context: Context, hop: str) -> bytes:
    """``pf-context`` of ``context.inherit(hop)``, written without making that context:
    the engine emits one for every output record (the fields as :func:`encode_context`)."""
    d = context.__dict__
    intent_id = d["intent_id"]
    fields: dict[str, Any] = {
        "intent_id": new_id(),
        "trace_id": d["trace_id"],
        "span_id": new_span_id(),
    }
    parent, correlation = d["span_id"], d["correlation_id"] or intent_id
    if parent:
        fields["parent_span_id"] = parent
    if intent_id:
        fields["causation_id"] = intent_id
    if correlation:
        fields["correlation_id"] = correlation
    for name in _CARRIED_CONTEXT_FIELDS:
        value = d[name]
        if value:
            fields[name] = value
    fields["trace"] = (*d["trace"], hop)
    baggage = d["baggage"]
    if baggage:
        fields["baggage"] = baggage
    deadline = d["deadline"]
    if deadline is not None:
        fields["deadline"] = deadline.isoformat()
    return orjson.dumps(fields)


# what an inherited context keeps as it is (encode_inherited), in encode_context's order
_CARRIED_CONTEXT_FIELDS = ("principal", "reply_to", "requester")


def encode_capabilities(capabilities: tuple[Capability, ...]) -> bytes:
    # Keyed by identity: decoded and inherited contexts share one tuple per sender, and
    # hashing a tuple of models for every emitted record costs more than the lookup saves.
    entry = _encoded_caps.get(id(capabilities))
    if entry is None or entry[0] is not capabilities:
        if len(_encoded_caps) > _CACHE_LIMIT:
            _encoded_caps.clear()
        entry = _encoded_caps[id(capabilities)] = (
            capabilities,
            orjson.dumps([str(c) for c in capabilities]),
        )
    return entry[1]


def decode_capabilities(raw: bytes) -> tuple[Capability, ...]:
    """``pf-capabilities`` back to capabilities; raises :class:`Rejected` when malformed."""
    caps = _decoded_caps.get(raw)
    if caps is None:
        try:
            items = orjson.loads(raw)
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError("expected a JSON list of 'operation:resource' strings")
            caps = tuple(Capability.parse(i) for i in items)
        except ValueError as exc:  # orjson and pydantic errors are ValueErrors
            message = str(exc).splitlines()[0]
            raise Rejected("bad-context", f"{CAPABILITIES_HEADER}: {message}") from None
        if len(_decoded_caps) > _CACHE_LIMIT:
            _decoded_caps.clear()
        _decoded_caps[bytes(raw)] = caps
    return caps


def decode_context(
    context_raw: bytes | None, caps_raw: bytes | None, token_raw: bytes | None = None
) -> Context:
    """The context from its headers (a fresh root context when there is none).

    ``token`` is the ``pf-token`` header as text, unchecked (the worker's guard verifies it),
    or None when absent or not ASCII.
    """
    try:
        context = Context.model_validate_json(context_raw) if context_raw else Context.new()
    except ValidationError as exc:
        raise Rejected("bad-context", f"{CONTEXT_HEADER}: {_summary(exc)}") from None
    # Set on the freshly validated (frozen) model: already-validated values, no copy.
    if caps_raw is not None:
        context.__dict__["capabilities"] = decode_capabilities(caps_raw)
    context.__dict__["token"] = (
        token_raw.decode("ascii") if token_raw and token_raw.isascii() else None
    )
    return context


def encode_key(key: str | None) -> bytes | None:
    return None if key is None else key.encode()


class Envelope(NamedTuple):
    """A decoded record: the intent, its context, and the raw authority headers."""

    intent: Intent
    context: Context
    caps_raw: bytes  # pf-capabilities (b"" when absent)
    token_raw: bytes | None  # pf-token
    context_raw: bytes | None  # pf-context, as sent (covered by pf-mac)
    mac_raw: bytes | None  # pf-mac: a worker's seal, for internal intents


# Headers that say what a record is and who sent it: one of each, or the record is refused
# (with two pf-token headers, which one would a reader believe?); each with its slot in
# Decoder.decode_record.
_SINGLE_HEADERS = {
    name: slot
    for slot, name in enumerate(
        (TYPE_HEADER, VERSION_HEADER, CONTEXT_HEADER, TOKEN_HEADER, CAPABILITIES_HEADER, MAC_HEADER)
    )
}
# JSON has no NaN or Infinity. Intents refuse them in float fields (allow_inf_nan=False);
# only a type with a field that takes any JSON (``Any``, a nested model that allows them)
# needs its values scanned, and parsed strictly where a non-finite number could hide.
_NON_FINITE_HINT = re.compile(rb"NaN|Infinity|[eE]\+?0*[1-9]\d{2}|\d{300}")
_free_numbers: dict[type[Intent], bool] = {}
_KNOWN_LIMIT = 1024  # (pf-type, pf-version) pairs a decoder remembers as good


def _takes_free_numbers(cls: type[Intent]) -> bool:
    """Whether some field of ``cls`` accepts a non-finite number (read off its schema)."""
    found = _free_numbers.get(cls)
    if found is None:
        found = _free_numbers[cls] = _schema_allows_inf_nan(cls.__pydantic_core_schema__)
    return found


def _schema_allows_inf_nan(
    schema: Any,
    allow: bool = True,
    defs: dict[str, Any] | None = None,
    seen: set[str] | None = None,
) -> bool:
    defs = {} if defs is None else defs
    seen = set() if seen is None else seen
    if isinstance(schema, list):
        return any(_schema_allows_inf_nan(item, allow, defs, seen) for item in schema)
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind == "any":
        return True
    if kind == "float":
        return bool(schema.get("allow_inf_nan", allow))
    if kind == "model":
        allow = schema.get("config", {}).get("allow_inf_nan", True)
    if kind == "definitions":
        defs.update({d["ref"]: d for d in schema.get("definitions", []) if "ref" in d})
    if kind == "definition-ref":
        ref = schema.get("schema_ref", "")
        if ref in seen or ref not in defs:
            return False
        seen.add(ref)
        return _schema_allows_inf_nan(defs[ref], allow, defs, seen)
    return any(
        _schema_allows_inf_nan(value, allow, defs, seen)
        for key, value in schema.items()
        if key not in ("metadata", "cls", "config", "serialization", "default")
    )


class Decoder:
    """Turns records into (intent, context) for a known set of intent types.

    The wire rules are strict: one each of the ``pf-`` headers that say what a record is
    (``malformed-headers``), a value (``empty``), key plus value plus headers within
    ``max_record_bytes`` (``oversized``), a ``pf-type`` unless the topic declares a default
    type (``missing-type``), finite numbers only, and a context whose deadline has a time
    zone (``bad-context``).
    """

    def __init__(
        self,
        types: Mapping[str, type[Intent]],
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        default_type: type[Intent] | None = None,
        unsigned_capabilities: bool = True,
    ) -> None:
        self.types = dict(types)
        self.max_record_bytes = max_record_bytes
        self.default_type = default_type
        # False: ``pf-capabilities`` is not even decoded (the topology accepts only tokens)
        self.unsigned_capabilities = unsigned_capabilities
        # (pf-type, pf-version) headers already found good -> their intent class
        self._known: dict[tuple[bytes | None, bytes | None], type[Intent]] = {}

    def decode(self, record: Record) -> tuple[Intent, Context]:
        """The intent and its context; raises :class:`Rejected` with the reason."""
        envelope = self.decode_record(record)
        return envelope.intent, envelope.context

    def decode_record(self, record: Record) -> Envelope:
        """:meth:`decode`, plus the raw authority headers; raises :class:`Rejected`."""
        value = record.value
        if not value:
            raise Rejected("empty", "record has no value")
        key = record.key
        size = len(value) + (len(key) if key else 0)
        # type, version, context, token, capabilities, mac (see _SINGLE_HEADERS)
        found: list[bytes | None] = [None, None, None, None, None, None]
        for name, raw in record.headers:
            size += len(name)
            if raw is None:
                continue
            size += len(raw)
            slot = _SINGLE_HEADERS.get(name)
            if slot is not None:
                if found[slot] is not None:
                    raise Rejected("malformed-headers", f"record has more than one {name} header")
                found[slot] = raw
        type_name, version, context_raw, token_raw, caps_raw, mac_raw = found
        if size > self.max_record_bytes:
            raise Rejected(
                "oversized",
                f"record is {size} bytes (key, value and headers), "
                f"the limit is {self.max_record_bytes}",
            )
        cls = self._known.get((type_name, version)) or self._check_type(type_name, version)
        # pf-capabilities is only decoded where it counts (topologies that accept it)
        context = decode_context(
            context_raw, caps_raw if self.unsigned_capabilities else None, token_raw
        )
        if _takes_free_numbers(cls) and _NON_FINITE_HINT.search(value):
            _check_finite(cls, value)
        try:
            intent = cls.model_validate_json(value)
        except ValidationError as exc:
            kind = (
                "decode" if any(e["type"] == "json_invalid" for e in exc.errors()) else "validation"
            )
            raise Rejected(kind, f"{cls.intent_type}: {_summary(exc)}") from None
        return Envelope(intent, context, caps_raw or b"", token_raw, context_raw, mac_raw)

    def _check_type(self, type_name: bytes | None, version: bytes | None) -> type[Intent]:
        """The intent class of a ``pf-type`` and ``pf-version`` pair seen the first time
        (remembered when good); raises :class:`Rejected`."""
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
        if len(self._known) < _KNOWN_LIMIT:  # bounded: the pair comes from the sender
            self._known[(None if type_name is None else bytes(type_name), version)] = cls
        return cls

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


def _check_finite(cls: type[Intent], value: bytes) -> None:
    """Refuse a value holding NaN, Infinity or a number too large for a double."""
    try:
        orjson.loads(value)  # strict JSON: no NaN/Infinity tokens, no overflow to infinity
    except orjson.JSONDecodeError as exc:
        raise Rejected(
            "decode", f"{cls.intent_type}: not valid JSON ({str(exc).splitlines()[0]})"
        ) from None


def one_line(exc: BaseException) -> str:
    """An exception as ``Type: message`` on one line (for ``pf-error``)."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _summary(exc: ValidationError) -> str:
    """A validation error on one line: ``field: message; field: message``."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def sealed_authority(headers: Headers) -> bytes | None:
    """The authority header a worker seal covers: ``pf-token``, else ``pf-capabilities``
    (capabilities a worker vouches for, as a schedule's kept grants), else None."""
    return header(headers, TOKEN_HEADER) or header(headers, CAPABILITIES_HEADER)


def header(headers: Headers, name: str) -> bytes | None:
    """The last value of header ``name``, or None."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found


def with_headers(headers: Headers, extra: Iterable[tuple[str, str]]) -> list[tuple[str, bytes]]:
    return [*headers, *((k, v.encode()) for k, v in extra)]
