"""Pure unit tests of the core model: capabilities, intents, contexts, effects, reactors,
topology declaration and the wire codec. No broker, no event loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import pytest
from pydantic import BaseModel, Field, ValidationError

from packetflow import (
    Call,
    Capability,
    CapabilityHierarchy,
    Conditional,
    Context,
    Emit,
    FanOut,
    Intent,
    Parallel,
    Pipeline,
    Reply,
    Retry,
    Sequential,
    Topology,
    TopologyError,
    call,
    emit,
    fan_out,
    parallel,
    pipeline,
    reply,
    retry,
    sequential,
    when,
)
from packetflow.core.effects import normalize
from packetflow.core.intent import intent_types_of
from packetflow.core.reactor import ReactorSpec, StateSpec
from packetflow.engine.codec import (
    CAPABILITIES_HEADER,
    CONTEXT_HEADER,
    TYPE_HEADER,
    VERSION_HEADER,
    Decoder,
    Rejected,
    decode_context,
    encode,
    encode_inherited,
    header,
)
from packetflow.engine.transport import Record

# -- intents used throughout -----------------------------------------------------------


class Withdraw(
    Intent,
    type_name="bank.Withdraw",
    version=3,
    requires=["withdraw:account/{account}", "login:bank"],
    key="account",
):
    account: str
    amount: int = Field(gt=0)


class Ping(Intent):
    n: int


class Numbered(Intent, type_name="t.Numbered", key="number"):
    number: int


class Cat(Intent, type_name="pets.Cat", key="name"):
    name: str
    lives: int = 9


class Dog(Intent, type_name="pets.Dog", key="name"):
    name: str
    good: bool = True


Pet = Cat | Dog


def cap(text: str) -> Capability:
    return Capability.parse(text)


# -- capabilities ------------------------------------------------------------------------


class TestCapability:
    def test_parse_operation_and_resource(self) -> None:
        c = Capability.parse("withdraw:account/*")
        assert (c.operation, c.resource) == ("withdraw", "account/*")
        assert str(c) == "withdraw:account/*"

    def test_resource_defaults_to_any(self) -> None:
        assert Capability.parse("read").resource == "*"
        assert Capability.parse("read:").resource == "*"
        assert str(Capability.parse("  read ")) == "read:*"

    def test_resource_keeps_further_colons(self) -> None:
        c = Capability.parse("call:urn:svc:x")
        assert (c.operation, c.resource) == ("call", "urn:svc:x")

    def test_strings_validate_as_capabilities(self) -> None:
        assert Capability.model_validate("deposit:account/7") == Capability(
            operation="deposit", resource="account/7"
        )

    def test_capabilities_are_hashable_values(self) -> None:
        assert {cap("read:x"), cap("read:x"), cap("read:y")} == {cap("read:x"), cap("read:y")}

    @pytest.mark.parametrize("bad", ["", ":account/1", "1read:x", "re ad:x", "read*:x"])
    def test_invalid_capabilities_are_rejected(self, bad: str) -> None:
        with pytest.raises(ValueError):
            Capability.parse(bad)

    @pytest.mark.parametrize(
        ("pattern", "resource", "expected"),
        [
            ("account/*", "account/42", True),
            ("account/*", "account/42/tx", False),  # * is one segment
            ("account/*", "accounts/42", False),
            ("account/*", "account", False),
            ("account/**", "account/42/tx/7", True),  # ** is any depth
            ("account/**", "account/42", True),
            ("account/**", "ledger/42", False),
            ("account/*/tx", "account/42/tx", True),
            ("account/*/tx", "account/42/43/tx", False),
            ("*", "anything/at/all", True),  # a lone * is any
            ("**", "a/b", True),
            ("account/42", "account/42", True),
            ("account/42", "account/420", False),
            ("a.b", "aXb", False),  # literal text is not a regex
            ("a+b", "a+b", True),
        ],
    )
    def test_resource_wildcards(self, pattern: str, resource: str, expected: bool) -> None:
        assert Capability(operation="op", resource=pattern).matches_resource(resource) is expected


class TestHierarchy:
    hierarchy = CapabilityHierarchy({"admin": ["write"], "write": ["read"]})

    def test_transitive_closure(self) -> None:
        assert self.hierarchy.operations_implied_by("admin") == {"admin", "write", "read"}
        assert self.hierarchy.operations_implied_by("write") == {"write", "read"}
        assert self.hierarchy.operations_implied_by("read") == {"read"}
        assert self.hierarchy.operations_implied_by("unknown") == {"unknown"}

    def test_admin_implies_read_through_write(self) -> None:
        assert self.hierarchy.implies(cap("admin:doc/*"), cap("read:doc/1"))
        assert self.hierarchy.implies(cap("admin:doc/*"), cap("write:doc/1"))
        assert self.hierarchy.implies(cap("read:doc/1"), cap("read:doc/1"))

    def test_no_upward_implication(self) -> None:
        assert not self.hierarchy.implies(cap("read:*"), cap("write:doc/1"))
        assert not self.hierarchy.implies(cap("write:*"), cap("admin:doc/1"))
        assert not self.hierarchy.implies(cap("read:*"), cap("admin:doc/1"))

    def test_resource_must_match_too(self) -> None:
        assert not self.hierarchy.implies(cap("admin:doc/1"), cap("read:doc/2"))
        assert not self.hierarchy.implies(cap("admin:doc/*"), cap("read:doc/1/page"))
        assert self.hierarchy.implies(cap("admin:doc/**"), cap("read:doc/1/page"))

    def test_missing_names_what_is_missing(self) -> None:
        held = [cap("read:doc/*"), cap("write:doc/1")]
        required = [cap("read:doc/9"), cap("write:doc/2"), cap("admin:doc/1"), cap("write:doc/1")]
        assert self.hierarchy.missing(held, required) == [cap("write:doc/2"), cap("admin:doc/1")]
        assert self.hierarchy.missing(held, [cap("read:doc/3")]) == []
        assert self.hierarchy.missing([], [cap("read:x")]) == [cap("read:x")]
        assert self.hierarchy.missing([], []) == []

    def test_grant_extends_an_existing_hierarchy(self) -> None:
        h = CapabilityHierarchy({"write": ["read"]})
        assert not h.implies(cap("owner:*"), cap("read:x"))
        h.grant("owner", "write")
        assert h.implies(cap("owner:*"), cap("read:x"))
        assert h.as_dict() == {"owner": ["write"], "write": ["read"]}

    def test_cycles_terminate(self) -> None:
        h = CapabilityHierarchy({"a": ["b"], "b": ["a", "c"]})
        assert h.operations_implied_by("a") == {"a", "b", "c"}


# -- intents -----------------------------------------------------------------------------


class TestIntent:
    def test_class_kwargs(self) -> None:
        assert Withdraw.intent_type == "bank.Withdraw"
        assert Withdraw.intent_version == 3
        assert Withdraw.key_field == "account"
        assert Withdraw.required_capabilities == (
            cap("withdraw:account/{account}"),
            cap("login:bank"),
        )

    def test_defaults(self) -> None:
        assert Ping.intent_type == "Ping"
        assert Ping.intent_version == 1
        assert Ping.required_capabilities == ()
        assert Ping(n=1).partition_key() is None
        assert Ping(n=1).capabilities_required() == ()

    def test_placeholders_are_filled_from_the_intent(self) -> None:
        w = Withdraw(account="a1", amount=5)
        assert w.capabilities_required() == (cap("withdraw:account/a1"), cap("login:bank"))
        # the class declaration itself is unchanged
        assert Withdraw.required_capabilities[0].resource == "account/{account}"

    def test_key_becomes_partition_key_as_a_string(self) -> None:
        assert Withdraw(account="a1", amount=5).partition_key() == "a1"
        assert Numbered(number=42).partition_key() == "42"

    def test_unknown_placeholder_fails_at_class_creation(self) -> None:
        with pytest.raises(TypeError, match="unknown field 'acct'"):

            class Bad(Intent, requires=["withdraw:account/{acct}"]):
                account: str

    def test_unknown_key_field_fails_at_class_creation(self) -> None:
        with pytest.raises(TypeError, match="key='nope' is not a field"):

            class Bad(Intent, key="nope"):
                account: str

    def test_version_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="version must be >= 1"):

            class Bad(Intent, version=0):
                x: int

    def test_intents_are_frozen_and_strict(self) -> None:
        w = Withdraw(account="a1", amount=5)
        with pytest.raises(ValidationError):
            w.amount = 6
        with pytest.raises(ValidationError):
            Withdraw(account="a1", amount=5, extra=1)
        with pytest.raises(ValidationError):
            Withdraw(account="a1", amount=0)

    def test_union_is_handled_with_match(self) -> None:
        def describe(pet: Pet) -> str:
            match pet:
                case Cat(name=name, lives=lives):
                    return f"cat {name} ({lives})"
                case Dog(name=name, good=True):
                    return f"good dog {name}"
                case Dog(name=name):
                    return f"dog {name}"
            raise AssertionError("unreachable")

        assert describe(Cat(name="tom", lives=3)) == "cat tom (3)"
        assert describe(Dog(name="rex")) == "good dog rex"
        assert describe(Dog(name="rex", good=False)) == "dog rex"

    def test_intent_types_of_unions(self) -> None:
        assert intent_types_of(Cat) == (Cat,)
        assert intent_types_of(Pet) == (Cat, Dog)
        assert intent_types_of(Annotated[Cat | Dog, "pets"]) == (Cat, Dog)
        assert intent_types_of([Cat, Ping]) == (Cat, Ping)
        with pytest.raises(TypeError):
            intent_types_of(Intent)
        with pytest.raises(TypeError):
            intent_types_of(int)


# -- contexts ----------------------------------------------------------------------------


class TestContext:
    def test_new_is_a_root(self) -> None:
        ctx = Context.new("alice", ["read:*", cap("write:doc/1")], baggage={"tenant": "t1"})
        assert ctx.principal == "alice"
        assert ctx.capabilities == (cap("read:*"), cap("write:doc/1"))
        assert ctx.correlation_id == ctx.intent_id
        assert ctx.parent_span_id is None
        assert ctx.causation_id is None
        assert ctx.trace == ()
        assert ctx.baggage == {"tenant": "t1"}
        assert len(ctx.intent_id) == 32 and len(ctx.trace_id) == 32 and len(ctx.span_id) == 16
        other = Context.new()
        assert other.intent_id != ctx.intent_id and other.trace_id != ctx.trace_id

    def test_new_accepts_a_correlation_id(self) -> None:
        assert Context.new(correlation_id="order-7").correlation_id == "order-7"

    def test_inherit(self) -> None:
        root = Context.new("alice", ["read:*"], reply_to="replies")
        child = root.inherit("validate")
        grandchild = child.inherit("charge")

        assert child.intent_id != root.intent_id
        assert child.span_id != root.span_id
        assert child.parent_span_id == root.span_id
        assert child.causation_id == root.intent_id
        assert child.trace_id == root.trace_id
        assert child.correlation_id == root.correlation_id == root.intent_id
        assert child.trace == ("validate",)
        assert (child.principal, child.capabilities) == (root.principal, root.capabilities)
        assert child.reply_to == "replies"

        assert grandchild.trace == ("validate", "charge")
        assert grandchild.causation_id == child.intent_id
        assert grandchild.parent_span_id == child.span_id
        assert grandchild.correlation_id == root.intent_id
        assert grandchild.trace_id == root.trace_id

    def test_inherit_without_correlation_uses_the_intent_id(self) -> None:
        ctx = Context()  # built directly: no correlation id
        assert ctx.correlation_id is None
        assert ctx.inherit("x").correlation_id == ctx.intent_id

    @pytest.mark.parametrize(
        "root",
        [
            Context.new("alice", token="abc.def", reply_to="replies", requester="w-1"),
            Context.new(
                "bob",
                deadline=datetime(2030, 1, 1, tzinfo=UTC),
                baggage={"tenant": "t1"},
            ).inherit("first"),
            Context(),  # no correlation id, no principal
        ],
        ids=["request", "deadline-and-baggage", "bare"],
    )
    def test_encoded_inherit_is_the_inherited_context(self, root: Context) -> None:
        """The engine writes an output's context without making it (encode_inherited): on the
        wire it must be exactly what inherit() gives, new ids aside."""
        wired = decode_context(encode_inherited(root, "hop"), None, None)
        made = root.inherit("hop")
        fresh = {"intent_id", "span_id"}
        assert wired.model_dump(exclude=fresh | {"token"}) == made.model_dump(
            exclude=fresh | {"token"}
        )
        assert wired.intent_id not in (root.intent_id, made.intent_id)
        assert len(wired.intent_id) == 32 and len(wired.span_id) == 16
        assert encode_inherited(root, "hop") != encode_inherited(root, "hop")  # fresh ids

    def test_copy_as_is(self) -> None:
        ctx = Context.new("bob", ["read:*"]).inherit("a")
        copy = ctx.copy_as_is()
        assert copy == ctx
        assert (copy.intent_id, copy.span_id, copy.trace) == (ctx.intent_id, ctx.span_id, ("a",))

    def test_merge(self) -> None:
        soon = datetime(2030, 1, 1, tzinfo=UTC)
        later = soon + timedelta(hours=1)
        a = Context.new("a", ["read:*", "write:x"], deadline=later, baggage={"k": "1", "a": "a"})
        a = a.inherit("one").inherit("two")
        b = Context.new("b", ["write:x", "admin:y"], deadline=soon, baggage={"k": "2"})
        b = b.inherit("two").inherit("three")

        merged = a.merge(b)
        assert merged.capabilities == (cap("read:*"), cap("write:x"), cap("admin:y"))
        assert merged.trace == ("one", "two", "three")
        assert merged.deadline == soon
        assert merged.baggage == {"k": "2", "a": "a"}
        assert (merged.intent_id, merged.principal) == (a.intent_id, "a")  # the rest is a's
        assert b.merge(a).deadline == soon

    def test_merge_deadline_when_one_side_has_none(self) -> None:
        when_ = datetime(2030, 1, 1, tzinfo=UTC)
        assert Context.new().merge(Context.new(deadline=when_)).deadline == when_
        assert Context.new(deadline=when_).merge(Context.new()).deadline == when_
        assert Context.new().merge(Context.new()).deadline is None

    def test_override(self) -> None:
        ctx = Context.new("alice", ["read:*"])
        changed = ctx.override(principal="system", capabilities=["admin:*"], reply_to="r")
        assert changed.principal == "system"
        assert changed.capabilities == (cap("admin:*"),)
        assert changed.reply_to == "r"
        assert changed.intent_id == ctx.intent_id
        assert ctx.principal == "alice"  # the original is untouched

    def test_with_capabilities_adds_without_duplicates(self) -> None:
        ctx = Context.new(capabilities=["read:*"]).with_capabilities("read:*", "write:x")
        assert ctx.capabilities == (cap("read:*"), cap("write:x"))

    def test_expired(self) -> None:
        now = datetime(2030, 1, 1, tzinfo=UTC)
        ctx = Context.new(deadline=now)
        assert not ctx.expired(now)
        assert ctx.expired(now + timedelta(microseconds=1))
        assert not Context.new().expired(now)
        assert Context.new(deadline=datetime.now(UTC) - timedelta(seconds=1)).expired()

    def test_context_is_frozen_and_strict(self) -> None:
        ctx = Context.new()
        with pytest.raises(ValidationError):
            ctx.principal = "x"
        with pytest.raises(ValidationError):
            Context(bogus=1)


# -- effects -----------------------------------------------------------------------------


class TestEffects:
    a = emit(Ping(n=1))
    b = emit(Ping(n=2), topic="t2", key="k")
    c = call(print, "x")

    def test_normalize(self) -> None:
        p = Ping(n=1)
        assert normalize(None) == []
        assert normalize(p) == [Emit(p)]
        assert normalize(self.a) == [self.a]
        assert normalize([p, self.b, self.c]) == [Emit(p), self.b, self.c]
        assert normalize((self.a, p)) == [self.a, Emit(p)]
        assert normalize(x for x in [p]) == [Emit(p)]
        assert normalize([]) == []

    @pytest.mark.parametrize("junk", [["nope"], [1], [None], [object()], "text"])
    def test_normalize_rejects_junk(self, junk: object) -> None:
        with pytest.raises(TypeError):
            normalize(junk)

    def test_normalize_rejects_non_iterables(self) -> None:
        with pytest.raises(TypeError):
            normalize(42)

    def test_constructors(self) -> None:
        p = Ping(n=1)
        assert emit(p, "t", "k") == Emit(p, "t", "k")
        assert reply(p) == Reply(p)
        assert fan_out(p, "x", "y", key="k") == FanOut(p, ("x", "y"), "k")
        assert self.c == Call(print, ("x",), "print")
        assert call(print, name="log").name == "log"
        assert sequential(self.a, self.b) == Sequential((self.a, self.b))
        assert parallel(self.a, self.b) == Parallel((self.a, self.b))
        assert when(True, self.a) == Conditional(True, self.a, None)
        step = lambda d: None  # noqa: E731
        assert pipeline(self.a, step) == Pipeline(self.a, (step,))
        with pytest.raises(ValueError, match="at least one topic"):
            fan_out(p)

    def test_rshift_builds_flat_sequential(self) -> None:
        assert self.a >> self.b == Sequential((self.a, self.b))
        assert self.a >> self.b >> self.c == Sequential((self.a, self.b, self.c))

    def test_and_builds_flat_parallel(self) -> None:
        assert self.a & self.b == Parallel((self.a, self.b))
        assert self.a & self.b & self.c == Parallel((self.a, self.b, self.c))

    def test_mixed_compositions_nest(self) -> None:
        assert (self.a & self.b) >> self.c == Sequential((Parallel((self.a, self.b)), self.c))
        assert self.a >> (self.b & self.c) == Sequential((self.a, Parallel((self.b, self.c))))
        assert (self.a >> self.b) & self.c == Parallel((Sequential((self.a, self.b)), self.c))
        r = retry(self.c, 2)
        assert r >> self.a == Sequential((r, self.a))

    def test_retry_delays_are_capped_exponential(self) -> None:
        r = retry(self.c, attempts=6, base_delay=1.0, factor=2.0, max_delay=5.0)
        assert list(r.delays()) == [1.0, 2.0, 4.0, 5.0, 5.0]
        assert list(retry(self.c, attempts=4, base_delay=0.5, factor=3.0).delays()) == [
            0.5,
            1.5,
            4.5,
        ]
        assert list(retry(self.c, attempts=1).delays()) == []
        assert list(Retry(self.c).delays()) == [0.1, 0.2]  # 3 attempts by default

    @pytest.mark.parametrize(
        "kwargs",
        [{"attempts": 0}, {"base_delay": -1.0}, {"max_delay": -1.0}, {"factor": 0.5}],
    )
    def test_retry_rejects_nonsense(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError):
            Retry(self.c, **kwargs)


# -- reactors ----------------------------------------------------------------------------


class Tally(BaseModel):
    count: int = 0


class TestReactorSpec:
    def test_stateless_signature(self) -> None:
        def r(intent: Ping, ctx: Context) -> None:
            """Does nothing.

            At all."""

        spec = ReactorSpec.build(r, (Ping,), "t")
        assert (spec.name, spec.topic, spec.stateful, spec.is_async) == ("r", "t", False, False)
        assert spec.description == "Does nothing."

    def test_stateful_async_signature(self) -> None:
        async def r(intent: Ping, ctx: Context, state: int) -> tuple[int, None]:
            return state, None

        spec = ReactorSpec.build(r, (Ping,), "t", state=0, name="counter")
        assert (spec.name, spec.stateful, spec.is_async) == ("counter", True, True)
        assert spec.state is not None and spec.state.initial() == 0

    def test_wrong_signatures_are_rejected(self) -> None:
        def two(intent: Ping, ctx: Context) -> None: ...

        def three(intent: Ping, ctx: Context, state: int) -> None: ...

        def one(intent: Ping) -> None: ...

        with pytest.raises(TypeError, match=r"\(intent, ctx, state\)"):
            ReactorSpec.build(two, (Ping,), "t", state=0)
        with pytest.raises(TypeError, match=r"\(intent, ctx\)"):
            ReactorSpec.build(three, (Ping,), "t")
        with pytest.raises(TypeError, match="got 1 positional"):
            ReactorSpec.build(one, (Ping,), "t")

    def test_state_specs(self) -> None:
        model = StateSpec.of(Tally)
        assert model.initial() == Tally()
        assert model.decode(model.encode(Tally(count=3))) == Tally(count=3)
        assert model.type_name == "Tally"

        plain = StateSpec.of({"seen": []})
        first = plain.initial()
        first["seen"].append(1)
        assert plain.initial() == {"seen": []}  # every key starts from a fresh copy
        assert plain.decode(plain.encode({"a": [1, 2]})) == {"a": [1, 2]}
        assert StateSpec.of(0).initial() == 0
        assert StateSpec.of(list).initial() == []
        with pytest.raises(TypeError):
            StateSpec.of({1, 2})  # not JSON


# -- topology declaration ----------------------------------------------------------------


class TestTopology:
    def test_duplicate_reactor_names_are_rejected(self) -> None:
        topo = Topology("dup-reactors")

        @topo.reactor(Ping, topic="a", public=True)
        def handler(intent: Ping, ctx: Context) -> None: ...

        with pytest.raises(TopologyError, match="registered twice"):

            @topo.reactor(Cat, topic="b", name="handler", public=True)
            def other(intent: Cat, ctx: Context) -> None: ...

    def test_duplicate_intent_type_names_are_rejected(self) -> None:
        class PingAgain(Intent, type_name="Ping"):
            n: int

        topo = Topology("dup-types")

        @topo.reactor(Ping, topic="a", public=True)
        def first(intent: Ping, ctx: Context) -> None: ...

        with pytest.raises(TopologyError, match="share the type name 'Ping'"):

            @topo.reactor(PingAgain, topic="b", public=True)
            def second(intent: PingAgain, ctx: Context) -> None: ...

        with pytest.raises(TopologyError, match="share the type name 'Ping'"):
            topo.route(PingAgain, "c")

        # nothing of the rejected declarations was kept
        assert list(topo.reactors) == ["first"]
        assert topo.topics == {"a": 4}
        assert topo.intent_types == {"Ping": Ping}

    def test_duplicate_type_names_inside_one_union_are_rejected(self) -> None:
        class CatAgain(Intent, type_name="pets.Cat"):
            name: str

        topo = Topology("dup-union")
        with pytest.raises(TopologyError, match=r"pets\.Cat"):

            @topo.reactor(Cat | CatAgain, topic="a", public=True)
            def handler(intent: Cat, ctx: Context) -> None: ...

        assert topo.reactors == {} and topo.topics == {} and topo.routes == {}

    def test_same_class_may_be_routed_and_consumed(self) -> None:
        topo = Topology("reuse")
        topo.route(Ping, "a")

        @topo.reactor(Ping, topic="a", public=True)
        def handler(intent: Ping, ctx: Context) -> None: ...

        assert topo.topic_for(Ping) == "a"

    def test_invalid_names_are_rejected(self) -> None:
        with pytest.raises(TopologyError):
            Topology("bad name")
        topo = Topology("ok")
        with pytest.raises(TopologyError):
            topo.topic("bad/topic")

    def test_topics_groups_and_namespaces(self) -> None:
        topo = Topology("shop", partitions=3, namespace="staging")

        @topo.reactor(Cat, topic="cats", state=Tally, partitions=5, public=True)
        def cats(intent: Cat, ctx: Context, state: Tally) -> tuple[Tally, None]:
            return state, None

        topo.route(Dog, "dogs")
        assert topo.physical("cats") == "staging.cats"
        assert topo.group_id == "staging.shop"
        assert topo.dead_letter_topic == "shop.dead-letters"
        assert topo.denied_topic == "shop.denied"
        assert topo.audit_topic == "shop.audit"
        assert topo.revocations_topic == "shop.revocations"
        specs = {
            s.name: (s.partitions, s.compacted, s.max_message_bytes) for s in topo.topic_specs()
        }
        room = topo.set_aside_bytes  # set-aside copies of any accepted record fit
        assert room > topo.max_record_bytes
        assert specs == {
            "staging.cats": (5, False, None),
            "staging.dogs": (3, False, None),
            "staging.shop.dead-letters": (3, False, room),
            "staging.shop.denied": (3, False, room),
            "staging.shop.audit": (3, False, None),
            "staging.shop.replies": (3, False, None),
            "staging.shop.revocations": (1, True, None),
            "staging.shop.members": (1, True, None),
            "staging.shop.cats.changelog": (5, True, None),
        }
        assert topo.intent_type("pets.Dog") is Dog
        assert topo.intent_type("Cat") is Cat
        with pytest.raises(TopologyError, match="unknown intent type"):
            topo.intent_type("Fish")

    def test_empty_namespace_means_none(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PACKETFLOW_NAMESPACE", "env-ns")
        assert Topology("x").physical("t") == "env-ns.t"
        assert Topology("x", namespace="").physical("t") == "t"


# -- codec -------------------------------------------------------------------------------


def _record(
    value: bytes | None, headers: list[tuple[str, bytes]], key: bytes | None = b"k"
) -> Record:
    return Record("topic", 0, 0, key, value, headers, 0)


def _replace(headers: list[tuple[str, bytes]], name: str, value: bytes | None) -> list:
    out = [(k, v) for k, v in headers if k != name]
    return out if value is None else [*out, (name, value)]


class TestCodec:
    decoder = Decoder({"pets.Cat": Cat, "pets.Dog": Dog, "bank.Withdraw": Withdraw})

    def good(self) -> tuple[Cat, Context, bytes, list[tuple[str, bytes]]]:
        cat = Cat(name="tom", lives=7)
        ctx = Context.new("alice", ["read:pets/*"], baggage={"b": "1"}).inherit("hop")
        value, headers = encode(cat, ctx)
        return cat, ctx, value, headers

    def reject(self, record: Record, decoder: Decoder | None = None) -> Rejected:
        with pytest.raises(Rejected) as info:
            (decoder or self.decoder).decode(record)
        return info.value

    def test_round_trip(self) -> None:
        cat, ctx, value, headers = self.good()
        assert header(headers, TYPE_HEADER) == b"pets.Cat"
        assert header(headers, VERSION_HEADER) == b"1"
        assert header(headers, "content-type") == b"application/json"
        intent, context = self.decoder.decode(_record(value, headers))
        assert intent == cat and type(intent) is Cat
        assert context == ctx

    def test_round_trip_keeps_deadline_and_reply_to(self) -> None:
        deadline = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
        ctx = Context.new(deadline=deadline, reply_to="replies")
        value, headers = encode(Withdraw(account="a", amount=1), ctx)
        assert header(headers, VERSION_HEADER) == b"3"
        intent, context = self.decoder.decode(_record(value, headers))
        assert intent == Withdraw(account="a", amount=1)
        assert context.deadline == deadline and context.reply_to == "replies"

    def test_missing_context_gets_a_fresh_one(self) -> None:
        _, _, value, headers = self.good()
        bare = _replace(_replace(headers, CONTEXT_HEADER, None), CAPABILITIES_HEADER, None)
        intent, context = self.decoder.decode(_record(value, bare))
        assert intent.name == "tom"
        assert context.capabilities == () and context.correlation_id == context.intent_id

    def test_capabilities_travel_in_their_own_header(self) -> None:
        _, ctx, value, headers = self.good()
        assert header(headers, CAPABILITIES_HEADER) == b'["read:pets/*"]'
        assert b"capabilities" not in header(headers, CONTEXT_HEADER)
        _, context = self.decoder.decode(_record(value, _replace(headers, CONTEXT_HEADER, None)))
        assert context.capabilities == ctx.capabilities  # a fresh context, same rights

    def test_malformed_capabilities_header_is_bad_context(self) -> None:
        _, _, value, headers = self.good()
        for raw in (b"not json", b'{"op": "x"}', b"[1, 2]", b'[":nothing"]'):
            rejected = self.reject(_record(value, _replace(headers, CAPABILITIES_HEADER, raw)))
            assert rejected.reason == "bad-context"
            assert "pf-capabilities" in rejected.message

    def test_older_versions_are_accepted(self) -> None:
        value, headers = encode(Withdraw(account="a", amount=1), Context.new())
        intent, _ = self.decoder.decode(_record(value, _replace(headers, VERSION_HEADER, b"2")))
        assert intent == Withdraw(account="a", amount=1)

    def test_single_type_decoder_needs_no_type_header(self) -> None:
        _, _, value, headers = self.good()
        decoder = Decoder({"pets.Cat": Cat}, default_type=Cat)
        intent, _ = decoder.decode(_record(value, _replace(headers, TYPE_HEADER, None)))
        assert intent == Cat(name="tom", lives=7)

    def test_empty(self) -> None:
        _, _, _, headers = self.good()
        assert self.reject(_record(None, headers)).reason == "empty"

    def test_oversized_counts_key_value_and_headers(self) -> None:
        _, _, value, headers = self.good()
        key = b"k"  # what _record keys it with
        size = len(key) + len(value) + sum(len(k) + len(v) for k, v in headers)
        exact = Decoder({"pets.Cat": Cat}, max_record_bytes=size)
        assert exact.decode(_record(value, headers))[0] == Cat(name="tom", lives=7)
        smaller = Decoder({"pets.Cat": Cat}, max_record_bytes=size - 1)
        rejected = self.reject(_record(value, headers), smaller)
        assert rejected.reason == "oversized"
        assert f"{size} bytes" in rejected.message

    def test_missing_type(self) -> None:
        _, _, value, headers = self.good()
        rejected = self.reject(_record(value, _replace(headers, TYPE_HEADER, None)))
        assert rejected.reason == "missing-type"
        assert "pf-type" in rejected.message

    def test_unknown_type(self) -> None:
        _, _, value, headers = self.good()
        rejected = self.reject(_record(value, _replace(headers, TYPE_HEADER, b"pets.Fish")))
        assert rejected.reason == "unknown-type"
        assert "pets.Fish" in rejected.message

    @pytest.mark.parametrize(
        ("name", "raw"), [(VERSION_HEADER, b"two"), (TYPE_HEADER, b"\xff\xfe")]
    )
    def test_bad_header(self, name: str, raw: bytes) -> None:
        _, _, value, headers = self.good()
        assert self.reject(_record(value, _replace(headers, name, raw))).reason == "bad-header"

    def test_schema_version(self) -> None:
        _, _, value, headers = self.good()
        rejected = self.reject(_record(value, _replace(headers, VERSION_HEADER, b"2")))
        assert rejected.reason == "schema-version"
        assert "v2 is newer than this worker's v1" in rejected.message

    @pytest.mark.parametrize("raw", [b"{not json", b'{"bogus": 1}', b'{"capabilities": [":"]}'])
    def test_bad_context(self, raw: bytes) -> None:
        _, _, value, headers = self.good()
        rejected = self.reject(_record(value, _replace(headers, CONTEXT_HEADER, raw)))
        assert rejected.reason == "bad-context"

    def test_decode_bad_json(self) -> None:
        _, _, _, headers = self.good()
        rejected = self.reject(_record(b'{"name": "tom", ', headers))
        assert rejected.reason == "decode"
        assert rejected.message.startswith("pets.Cat: ")

    @pytest.mark.parametrize(
        "value",
        [b'{"name": 5}', b'{"lives": 3}', b'{"name": "tom", "claws": 10}', b"[1, 2]"],
    )
    def test_validation(self, value: bytes) -> None:
        _, _, _, headers = self.good()
        rejected = self.reject(_record(value, headers))
        assert rejected.reason == "validation"
        assert rejected.message.startswith("pets.Cat: ")

    def test_validation_of_field_constraints(self) -> None:
        _, headers = encode(Withdraw(account="a", amount=1), Context.new())
        rejected = self.reject(_record(b'{"account": "a", "amount": -5}', headers))
        assert rejected.reason == "validation"
        assert "amount" in rejected.message
