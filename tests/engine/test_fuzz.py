"""A fuzzer over headers, contexts, keys and values (hypothesis, derandomised, bounded).

The invariant it checks is the engine's promise at the trust boundary: every record is
processed exactly once or set aside exactly once (dead letters or denied, with its source),
and the worker never stops, whatever the bytes.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packetflow import Context, Intent, KeyPair, Security, TestDriver, Topology, issue_token
from packetflow.engine.codec import (
    CAPABILITIES_HEADER,
    CONTEXT_HEADER,
    MAC_HEADER,
    TOKEN_HEADER,
    TYPE_HEADER,
    VERSION_HEADER,
)

KEY = KeyPair.generate("fuzz")
GOOD = issue_token("fuzzer", ["fuzz:item/*"], key=KEY, ttl="7d", now=1_700_000_000)
TOPIC = "fuzzed"
# made once: inside a strategy, Context.new()'s random ids would upset hypothesis
BASE_CONTEXT = orjson.loads(orjson.dumps({"intent_id": "i" * 32, "trace_id": "t" * 32,
                                          "span_id": "s" * 16}))


class Put(Intent, type_name="fuzz.Put", key="item", requires=["fuzz:item/{item}"]):
    item: str
    amount: int
    note: Any = None


class Moved(Intent, type_name="fuzz.Moved", key="item", internal=True):
    item: str
    amount: int


class Out(Intent, type_name="fuzz.Out", key="item"):
    item: str
    total: int


def topology() -> Topology:
    topo = Topology("fuzz", capabilities={"fuzz": []}, namespace="", max_record_bytes=4096,
                    security=Security(trusted_keys=[KEY]))
    topo.route(Out, "outs")

    @topo.reactor(Put | Moved, topic=TOPIC, state=int)
    def total(intent: Put | Moved, ctx: Context, state: int) -> Any:
        new = state + intent.amount
        return new, [Out(item=intent.item, total=new)]

    return topo


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(allow_nan=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                          inner, max_size=3),
    max_leaves=8,
)


@st.composite
def values(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["put", "put", "json", "bytes", "empty", "nan", "none"]))
    if kind == "put":
        fields: dict[str, Any] = {"item": draw(st.text(max_size=6)),
                                  "amount": draw(st.integers(-(2**70), 2**70))}
        if draw(st.booleans()):
            fields["note"] = draw(json_values)
        return json.dumps(fields).encode()  # big ints and NaN as Python writes them
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "nan":
        return b'{"item": "x", "amount": 1, "note": ' + draw(
            st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"])) + b"}"
    return b"" if kind == "empty" else None


@st.composite
def contexts(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["good", "fields", "junk", "none"]))
    if kind == "none":
        return None
    if kind == "junk":
        return draw(st.binary(max_size=40))
    base = dict(BASE_CONTEXT)
    if kind == "fields":
        for name in draw(st.lists(st.sampled_from(
                ["deadline", "principal", "reply_to", "trace", "baggage", "intent_id", "extra"]),
                max_size=3)):
            base[name] = draw(st.one_of(
                json_values,
                st.sampled_from(["2099-01-01T00:00:00", "2000-01-01T00:00:00+00:00",
                                 "2099-01-01T00:00:00+00:00", "fuzz.replies", "fuzzer"]),
            ))
    return json.dumps(base).encode()


MUTATIONS = ["type", "version", "context", "token", "capabilities", "mac", "twice", "value",
             "key", "huge", "principal"]


@st.composite
def records(draw: st.DrawFn) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """A valid, authorised record with up to three things about it changed."""
    item = draw(st.text(max_size=6))
    key: bytes | None = item.encode()
    value: bytes | None = json.dumps({"item": item, "amount": draw(st.integers(-9, 9))}).encode()
    fields: dict[str, bytes | None] = {
        TYPE_HEADER: b"fuzz.Put", CONTEXT_HEADER: json.dumps(BASE_CONTEXT).encode(),
        TOKEN_HEADER: GOOD.encode(),
    }
    extra: list[tuple[str, bytes]] = []
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        if mutation == "type":
            fields[TYPE_HEADER] = draw(st.sampled_from(
                [b"fuzz.Moved", b"fuzz.Out", b"\xff", b"", None]))
        elif mutation == "version":
            fields[VERSION_HEADER] = draw(st.sampled_from([b"1", b"2", b"x", b"-1"]))
        elif mutation == "context":
            fields[CONTEXT_HEADER] = draw(contexts())
        elif mutation == "token":
            fields[TOKEN_HEADER] = draw(st.sampled_from([b"a.b", b"\x00", b"", None]))
        elif mutation == "capabilities":
            extra.append((CAPABILITIES_HEADER, b'["fuzz:item/*"]'))
        elif mutation == "mac":
            extra.append((MAC_HEADER, draw(st.binary(max_size=50))))
        elif mutation == "twice":
            name = draw(st.sampled_from([TYPE_HEADER, CONTEXT_HEADER, TOKEN_HEADER]))
            if fields.get(name) is not None:
                extra.append((name, fields[name]))  # type: ignore[arg-type]
        elif mutation == "value":
            value = draw(values())
        elif mutation == "key":
            key = draw(st.one_of(st.none(), st.binary(max_size=12), st.just(b"k" * 5000)))
        elif mutation == "huge":
            value = json.dumps({"item": item, "amount": 2**70}).encode()
        elif mutation == "principal":
            context = dict(BASE_CONTEXT, principal=draw(st.sampled_from(["fuzzer", "mallory"])))
            fields[CONTEXT_HEADER] = json.dumps(context).encode()
    headers = [(k, v) for k, v in fields.items() if v is not None] + extra
    return key, value, draw(st.permutations(headers))


@settings(max_examples=400, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(records(), min_size=1, max_size=8))
def test_every_record_is_processed_or_set_aside_exactly_once(
    batch: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
) -> None:
    with TestDriver(topology(), start_time=1_700_000_100, keys=[KEY]) as driver:
        for key, value, headers in batch:
            driver.send_raw(TOPIC, value, key=key, headers=headers)  # never raises
        processed = driver.metrics["processed"].get("total", 0)
        sources = [r.header("pf-source") for r in [*driver.dead_letters(), *driver.denied()]]
        assert all(s and s.startswith(f"{TOPIC}/") for s in sources), sources
        assert len(set(sources)) == len(sources), "a record was set aside twice"
        assert processed + len(sources) == len(batch), (processed, sources)
        assert len(driver.emitted("outs")) == processed  # a failed record emitted nothing
