"""The offline provider: a proposed intent read from a text with no model, guided by the
intent types' schemas.

The type is the one whose name (``AuditBalance``: audit, balance), docstring and field
names best match the text's words (fuzzy, with word stems and a small thesaurus of
common verbs: "put" for deposit, "send" for transfer). Field values come from the text:
``field=value`` first, then numbers for numeric fields, identifier-like tokens
(``acct-7``, ``c1``, ``plant-a``) and quoted strings for text fields, dates and times for
date fields (``dateparser``), choices of a ``Literal`` or ``Enum`` by fuzzy match and
booleans by their field's name. Where several fields could take a value, the words
before it decide: a field's own name ("invoice 3", "cart c1") or a preposition
("from acct-1" for ``source``, "into acct-7" for ``account``).

It is honest and deterministic: a required field with no value in the text is listed in
``missing``, never invented; no type that matches well enough (or two that match
equally) gives ``intent_type=None`` with a note.
"""

from __future__ import annotations

import enum
import re
import types as pytypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import ValidationError
from rapidfuzz import fuzz

from packetflow.core.intent import Intent
from packetflow.mcp.proposals.base import Proposal, first_error, own_doc

# -- words -------------------------------------------------------------------------------


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


STOPWORDS = _set(
    """a an the of to into onto in on at for from by with as and or but is are be been was
    were it its this that these those me my i we our you your please pls kindly can could
    would should will shall want wants need needs like let lets make do does did just now
    some any all new there here what whats which who whom whose how much many per each
    about then than also so too very up out off via over under is be am s"""
)
PREPOSITIONS = _set("from to into onto in on at for by of as with out")
# words that say what a number is, never a value themselves
UNITS = _set("""dollar dollars usd eur euro euros gbp pound pounds cent cents money funds cash
    degree degrees deg °c °f celsius fahrenheit c f percent pct unit units piece pieces
    item items times x""")
NEGATIONS = _set("no not don't dont never without non")

# a small thesaurus: a word of an intent type's name, and words that ask for the same
TYPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "deposit": ("put", "lodge", "pay in", "top up", "topup", "credit"),
    "withdraw": ("take", "take out", "cash out", "debit"),
    "transfer": ("send", "move", "wire"),
    "audit": ("check", "show", "inspect", "see", "view", "look"),
    "balance": ("funds", "how much"),
    "add": ("put", "insert", "append"),
    "item": ("product", "article"),
    "checkout": ("check out", "buy", "purchase", "pay for"),
    "subscribe": ("sign up", "signup", "enrol", "enroll", "register"),
    "unsubscribe": ("cancel subscription", "unregister", "opt out"),
    "paid": ("pay", "payment", "settled", "settle"),
    "pay": ("paid", "payment", "settle"),
    "remind": ("reminder", "nudge", "chase"),
    "credit": ("refund", "goodwill"),
    "invoice": ("bill",),
    "reading": ("read", "reads", "report", "reports", "measured", "measure"),
    "threshold": ("limit", "maximum", "alert above"),
    "order": ("buy", "purchase"),
    "job": ("task",),
    "cancel": ("stop", "abort"),
    "create": ("new", "make", "set up", "setup"),
}
# a word of a field's name, and words a text uses for it
FIELD_SYNONYMS: dict[str, tuple[str, ...]] = {
    "id": ("ref", "reference", "number", "no", "#"),
    "amount": ("sum", "total", "value", "price"),
    "qty": ("quantity", "count", "pieces", "times"),
    "quantity": ("qty", "count", "pieces"),
    "celsius": ("degrees", "deg", "°c", "temperature", "temp"),
    "tz": ("timezone", "zone", "time zone"),
    "sku": ("item", "product"),
    "customer": ("client", "cust"),
    "account": ("acct", "acc"),
    "device": ("sensor",),
    "monthly": ("month", "monthly"),
    "source": ("from",),
    "target": ("to",),
}
# a preposition before a value, and words of the fields it suits
ROLES: dict[str, frozenset[str]] = {
    "from": _set("source sender origin from payer debtor src device"),
    "to": _set("target destination recipient to payee creditor dest dst account cart"),
    "into": _set("target destination account cart to"),
    "onto": _set("target destination account cart to"),
    "for": _set("customer account user owner holder beneficiary client cart device for"),
    "at": _set("site location place warehouse store where"),
    "in": _set("site location place warehouse cart account zone tz region"),
    "on": _set("device site account cart"),
    "of": _set("account customer device cart owner"),
    "by": _set("operator author user agent by"),
    "as": _set("id ref reference name"),
    "with": _set("id ref reference"),
}
ID_WORDS = _set("id ref reference key uuid code")
_SUFFIXES = (
    "ations",
    "ation",
    "ings",
    "ing",
    "ments",
    "ment",
    "als",
    "al",
    "ions",
    "ion",
    "ers",
    "er",
    "ed",
    "es",
    "s",
)

# -- dates and times ---------------------------------------------------------------------

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_WEEKDAY = r"(?:mon|tues|wednes|thurs|fri|satur|sun)day"
_UNIT = r"(?:sec(?:ond)?|min(?:ute)?|hour|hr|day|week|month|year)s?"
_COUNT = r"(?:\d+|an?|one|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty|thirty)"
_TIME = r"\d{1,2}:\d{2}(?::\d{2})?(?:\s*[ap]\.?m\.?)?|\d{1,2}\s*[ap]\.?m\.?"
_DATE_ATOM = re.compile(
    r"(?<![\w-])(?:"
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?"
    rf"|{_COUNT}\s+{_UNIT}\s+ago|in\s+{_COUNT}\s+{_UNIT}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\.?(?:,?\s+\d{{4}})?"
    rf"|{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
    rf"|now|today|tonight|yesterday|tomorrow|(?:last|next|this)\s+(?:{_WEEKDAY}|week|month|year)"
    rf"|{_WEEKDAY}|{_TIME}"
    r")(?![\w-])",
    re.IGNORECASE,
)
_DATE_GLUE = re.compile(r"^\s*(?:,|at|on)?\s*$", re.IGNORECASE)

# -- tokens ------------------------------------------------------------------------------

_QUOTES = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}
_PIECE = re.compile(
    r'"[^"]*"|`[^`]*`|[$€£#]?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w-])|[^\s,;!?()\[\]{}]+'
)
_NUMBER = re.compile(
    r"^(?P<cur>[$€£#])?(?P<num>[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"
    r"(?P<unit>%|°[cf]?|[cfx])?$",
    re.IGNORECASE,
)
_IDENT_SEPARATOR = re.compile(r"[A-Za-z0-9][._@/:][A-Za-z0-9]")


@dataclass
class _Token:
    text: str  # as written
    low: str
    index: int  # position among the tokens
    kind: str  # word, ident, number, quoted, date
    value: Any = None
    start: int = 0  # where it is in the text
    end: int = 0


@dataclass
class _Slot:
    """One field of the intent type, as the filler sees it."""

    name: str
    kind: str  # int, float, decimal, str, bool, date, datetime, choice, list, other
    required: bool
    words: tuple[str, ...]  # the words of its name
    synonyms: dict[str, str]  # a word a text may use -> the word of the name it stands for
    choices: tuple[Any, ...] = ()

    @property
    def id_like(self) -> bool:
        return bool(ID_WORDS & set(self.words))

    @property
    def prepositional(self) -> bool:
        """Whether a text usually names it after a preposition ("to cart c1")."""
        return any(set(self.words) & suits for suits in ROLES.values())


@dataclass
class _Reading:
    """What one intent type makes of the text."""

    cls: type[Intent]
    score: float
    fields: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    required: int = 0

    @property
    def filled(self) -> float:
        return 1.0 if not self.required else 1 - len(self.missing) / self.required


def split_name(name: str) -> list[str]:
    """``AuditBalance`` -> ``["audit", "balance"]``; ``transfer_id`` -> transfer, id."""
    parts = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)
    return [p.lower() for p in parts]


def stem(word: str) -> str:
    """A crude English stem: common endings off (reading, readings -> read)."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


def similar(a: str, b: str) -> float:
    """1.0 for the same word, 0.9 for the same stem or a near spelling, else 0."""
    if a == b:
        return 1.0
    if len(a) >= 3 and len(b) >= 3 and stem(a) == stem(b):
        return 0.9
    if min(len(a), len(b)) >= 5 and fuzz.ratio(a, b) >= 85:
        return 0.9
    return 0.0


class OfflineProvider:
    """Proposes intents with no model (see the module docstring). ``now`` anchors relative
    dates ("5 minutes ago"; default: the wall clock, in ``timezone``)."""

    name = "offline"

    def __init__(
        self,
        *,
        now: datetime | Callable[[], datetime] | None = None,
        timezone: str = "UTC",
    ) -> None:
        self._now = now
        self.timezone = timezone

    async def propose(self, text: str, types: Sequence[type[Intent]]) -> Proposal:
        """The intent ``text`` asks for, among ``types`` (see the module docstring)."""
        return self.propose_now(text, types)

    def propose_now(self, text: str, types: Sequence[type[Intent]]) -> Proposal:
        """:meth:`propose` without the event loop (it never waits for anything)."""
        text = text.strip()
        for curly, plain in _QUOTES.items():
            text = text.replace(curly, plain)
        if not text:
            return Proposal(text, None, notes=("the text is empty",), provider=self.name)
        if not types:
            return Proposal(
                text, None, notes=("no intent types to choose from",), provider=self.name
            )
        reader = _Reader(text, list(types), self._reference_time(), self.timezone)
        readings = reader.candidates()
        if not readings:
            known = ", ".join(sorted(t.intent_type for t in types))
            why = f"no intent type matches the text (known: {known})"
            return Proposal(text, None, notes=(why,), provider=self.name)
        best = readings[0]
        if len(readings) > 1:
            second = readings[1]
            if (second.score, second.filled) == (best.score, best.filled):
                tied = [
                    r.cls.intent_type
                    for r in readings
                    if (r.score, r.filled) == (best.score, best.filled)
                ]
                return Proposal(
                    text,
                    None,
                    notes=(
                        f"ambiguous: the text matches {' and '.join(tied)} equally; name the type",
                    ),
                    provider=self.name,
                )
            if second.score >= 0.8 * best.score:
                best.notes.append(f"also close: {second.cls.intent_type}")
        return Proposal(
            text,
            best.cls.intent_type,
            dict(best.fields),
            tuple(best.missing),
            tuple(best.notes),
            self.name,
        )

    def _reference_time(self) -> datetime:
        now = self._now() if callable(self._now) else self._now
        return now if now is not None else datetime.now(UTC)


class _Reader:
    """One text, read against every candidate type."""

    def __init__(self, text: str, types: list[type[Intent]], now: datetime, timezone: str) -> None:
        self.text = text
        self.types = types
        self.now = now
        self.timezone = timezone
        self.masked, self.dates = self._find_dates(text)
        self.tokens = self._tokenize(self.masked)
        self.words = self._match_words()
        # every word that names an intent type or a synonym of one: never a value
        self.vocabulary = {w for t in types for w in self._name_words(t)}
        self.vocabulary.update(
            w for words in TYPE_SYNONYMS.values() for s in words for w in s.split()
        )
        self.vocabulary.update(TYPE_SYNONYMS)

    # -- reading the text ----------------------------------------------------------------

    def _find_dates(self, text: str) -> tuple[str, list[tuple[int, int, str]]]:
        """The text with its date and time phrases blanked out, and the phrases."""
        spans: list[tuple[int, int]] = []
        for m in _DATE_ATOM.finditer(text):
            if spans and _DATE_GLUE.match(text[spans[-1][1] : m.start()]):
                spans[-1] = (spans[-1][0], m.end())
            else:
                spans.append((m.start(), m.end()))
        masked = text
        found = []
        for start, end in spans:
            found.append((start, end, text[start:end]))
            masked = masked[:start] + " " * (end - start) + masked[end:]
        return masked, found

    def _tokenize(self, text: str) -> list[_Token]:
        pieces = [(m.start(), m.end(), m.group()) for m in _PIECE.finditer(text)]
        for start, end, phrase in self.dates:
            pieces.append((start, end, "\0" + phrase))
        pieces.sort()
        tokens: list[_Token] = []
        for start, end, raw in pieces:
            token = self._classify(raw, len(tokens))
            if token is not None:
                token.start, token.end = start, end
                tokens.append(token)
        return tokens

    def _classify(self, raw: str, index: int) -> _Token | None:
        if raw.startswith("\0"):
            phrase = raw[1:]
            return _Token(phrase, phrase.lower(), index, "date", phrase)
        if raw[0] in '"`' and len(raw) >= 2:
            inner = raw[1:-1].strip()
            return _Token(raw, inner.lower(), index, "quoted", inner) if inner else None
        piece = raw.strip(".:'\"")
        if not piece:
            return None
        low = piece.lower()
        if low.endswith("'s"):
            low, piece = low[:-2], piece[:-2]
        number = _NUMBER.match(piece)
        if number:
            digits = number["num"].replace(",", "")
            return _Token(piece, low, index, "number", digits)
        has_digit = any(c.isdigit() for c in piece)
        has_alpha = any(c.isalpha() for c in piece)
        if not has_alpha and not has_digit and piece not in ("#", "$", "°c"):
            return None
        short_part = "-" in piece and any(len(p) <= 2 for p in piece.split("-") if p)
        if (has_digit or _IDENT_SEPARATOR.search(piece) or short_part or "_" in piece) and (
            has_alpha or has_digit
        ):
            return _Token(piece, low, index, "ident", piece)
        return _Token(piece, low, index, "word", piece)

    def _match_words(self) -> list[tuple[str, int]]:
        """(word, token index) for type matching: words, their hyphen parts and joins, and
        two adjacent words joined ("check out" -> checkout)."""
        out: list[tuple[str, int]] = []
        previous: _Token | None = None
        for token in self.tokens:
            if token.kind == "word":
                out.append((token.low, token.index))
                if "-" in token.low:
                    out.extend((p, token.index) for p in token.low.split("-") if p)
                    out.append((token.low.replace("-", ""), token.index))
                if previous is not None and previous.index == token.index - 1:
                    out.append((previous.low + token.low, token.index))
                previous = token
            else:
                previous = None
        return out

    def _phrase_present(self, phrase: str) -> int | None:
        """The token index where ``phrase`` (one or more words) occurs, or None."""
        parts = phrase.split()
        lows = [t.low if t.kind == "word" else "\0" for t in self.tokens]
        for i in range(len(lows) - len(parts) + 1):
            if lows[i : i + len(parts)] == parts:
                return self.tokens[i + len(parts) - 1].index
        return None

    # -- choosing the type ---------------------------------------------------------------

    @staticmethod
    def _name_words(cls: type[Intent]) -> list[str]:
        words = split_name(cls.__name__)
        for word in split_name(cls.intent_type.rsplit(".", 1)[-1]):
            if word not in words:
                words.append(word)
        return words

    def candidates(self) -> list[_Reading]:
        """The types the text may ask for, best first (empty: none matches well enough)."""
        readings = []
        for cls in self.types:
            score, name_hits = self._type_score(cls)
            if score <= 0:
                continue
            reading = self._fill(cls, score, name_hits)
            readings.append(reading)
        readings.sort(key=lambda r: (-r.score, -r.filled, r.cls.intent_type))
        return readings

    def _type_score(self, cls: type[Intent]) -> tuple[float, set[int]]:
        """How well the text's words match ``cls`` (0: not a candidate), and the tokens
        that matched its name (the verb: not a value, a weak cue)."""
        hits: set[int] = set()
        name_score = 0.0
        for word in self._name_words(cls):
            best, where = 0.0, -1
            for text_word, index in self.words:
                s = similar(word, text_word)
                if s > best:
                    best, where = s, index
            for synonym in TYPE_SYNONYMS.get(word, ()):
                at = self._phrase_present(synonym)
                if at is not None and best < 0.8:
                    best, where = 0.8, at
            if best > 0:
                name_score += best
                hits.add(where)
        explicit = 0.0
        for token in self.tokens:
            if token.low in _own_names(cls):
                explicit = 3.0
                hits.add(token.index)
        slots = _slots(cls)
        mentioned = sum(
            1 for slot in slots if any(self._word_matches_slot(w, slot) for w, _ in self.words)
        )
        choices = sum(
            1
            for slot in slots
            if slot.kind == "choice"
            and any(
                _closest_choice(slot, t.low) is not None for t in self.tokens if t.kind == "word"
            )
        )
        if name_score == 0 and explicit == 0 and mentioned < 2:
            return 0.0, hits
        doc_words = {
            w
            for w in re.findall(r"[a-z]+", own_doc(cls).lower())
            if len(w) >= 4 and w not in STOPWORDS
        }
        doc_hits = sum(1 for w in doc_words if any(similar(w, t) >= 0.9 for t, _ in self.words))
        score = (
            2 * name_score + explicit + 0.25 * mentioned + 0.5 * choices + min(0.5, 0.1 * doc_hits)
        )
        return round(score, 6), hits

    def _word_matches_slot(self, word: str, slot: _Slot) -> bool:
        if word in STOPWORDS or word in PREPOSITIONS:
            return False
        if word in slot.synonyms:
            return True
        return any(similar(word, w) >= 0.9 for w in slot.words if len(w) >= 3)

    # -- filling the fields --------------------------------------------------------------

    def _fill(self, cls: type[Intent], score: float, name_hits: set[int]) -> _Reading:
        slots = _slots(cls)
        reading = _Reading(cls, score, required=sum(1 for s in slots if s.required))
        tokens = self.tokens
        explicit = self._assignments(slots)
        used: set[int] = set(name_hits)
        for slot_name, (value, indices) in explicit.items():
            reading.fields[slot_name] = value
            used.update(indices)
        for token in tokens:  # type names named outright are not values
            if token.low in _own_names(cls):
                used.add(token.index)

        # booleans: their field's name in the text (negated: False)
        for slot in slots:
            if slot.kind != "bool" or slot.name in reading.fields:
                continue
            for token in tokens:
                if (
                    token.kind == "word"
                    and token.index not in name_hits
                    and (self._word_matches_slot(token.low, slot))
                ):
                    before = tokens[token.index - 1].low if token.index > 0 else ""
                    reading.fields[slot.name] = before not in NEGATIONS
                    used.add(token.index)
                    if before in NEGATIONS:
                        used.add(token.index - 1)
                    break

        # everything else: every (field, token) pair that could go together, best first
        pairs: list[tuple[float, int, int, Any]] = []
        for order, slot in enumerate(slots):
            if slot.name in reading.fields or slot.kind in ("bool", "list", "other"):
                continue
            for token in tokens:
                if token.index in used:
                    continue
                scored = self._pair(slot, token, name_hits, slots)
                if scored is not None:
                    pairs.append((-scored[0], order, token.index, scored[1]))
        pairs.sort(key=lambda p: (p[0], p[1], p[2]))
        for _, order, index, value in pairs:
            slot = slots[order]
            if slot.name in reading.fields or index in used:
                continue
            reading.fields[slot.name] = value
            used.add(index)

        reading.fields = {s.name: reading.fields[s.name] for s in slots if s.name in reading.fields}
        reading.missing = [s.name for s in slots if s.required and s.name not in reading.fields]
        leftovers = [
            t.text
            for t in tokens
            if t.index not in used and t.kind in ("number", "ident", "quoted", "date")
        ]
        if leftovers:
            reading.notes.append(f"not used: {', '.join(leftovers)}")
        if not reading.missing:
            try:
                cls.model_validate(reading.fields)
            except ValidationError as exc:
                reading.notes.append(f"does not validate: {first_error(exc)}")
        return reading

    def _assignments(self, slots: list[_Slot]) -> dict[str, tuple[Any, set[int]]]:
        """``field=value`` and ``field: value`` in the text: the value and its tokens."""
        out: dict[str, tuple[Any, set[int]]] = {}
        for slot in slots:
            name = r"[\s_-]?".join(re.escape(w) for w in re.split(r"_+", slot.name) if w)
            pattern = re.compile(
                rf"(?<![\w.])({name})\s*(?:=|:)\s*(\"[^\"]*\"|'[^']*'|\[[^\]]*\]|[^\s;]+)",
                re.IGNORECASE,
            )
            m = pattern.search(self.text)
            if m is None:
                continue
            raw = m.group(2)
            if raw[0] not in "\"'[" and slot.kind != "list":
                raw = raw.rstrip(",.")
            value = self._convert(slot, raw)
            out[slot.name] = (value, self._tokens_within(m.start(), m.end()))
        return out

    def _tokens_within(self, start: int, end: int) -> set[int]:
        """Indices of the tokens between ``start`` and ``end`` of the text."""
        return {t.index for t in self.tokens if t.start >= start and t.end <= end}

    def _convert(self, slot: _Slot, raw: str) -> Any:
        """An explicit value as its field's type where the text makes that plain."""
        if raw[:1] in "\"'" and raw[-1:] == raw[:1] and len(raw) >= 2:
            return raw[1:-1]
        if slot.kind == "list":
            inner = raw.strip("[]")
            return [p.strip().strip("\"'") for p in inner.split(",") if p.strip()]
        if slot.kind in ("int", "float", "decimal"):
            number = _NUMBER.match(raw)
            if number:
                return self._number(slot, number["num"].replace(",", "")) or raw
        if slot.kind == "bool":
            low = raw.lower()
            if low in ("true", "yes", "y", "1", "on"):
                return True
            if low in ("false", "no", "n", "0", "off"):
                return False
        if slot.kind in ("date", "datetime"):
            parsed = self._parse_date(raw)
            if parsed is not None:
                return parsed.date() if slot.kind == "date" else parsed
        if slot.kind == "choice":
            chosen = _closest_choice(slot, raw.lower())
            if chosen is not None:
                return chosen
        return raw

    def _pair(
        self, slot: _Slot, token: _Token, name_hits: set[int], slots: list[_Slot]
    ) -> tuple[float, Any] | None:
        """How well ``token`` suits ``slot`` (None: not at all), and the value it gives."""
        cue = self._cue(slot, token, name_hits)
        role = self._role(slot, token)
        value: Any = None
        if slot.kind == "choice":
            if token.kind not in ("word", "ident", "quoted"):
                return None
            value = _closest_choice(slot, token.low)
            if value is None:
                return None
            base = 1.0
        elif slot.kind in ("int", "float", "decimal"):
            if token.kind != "number":
                return None
            value = self._number(slot, token.value)
            if value is None:
                return None
            base = 1.0
        elif slot.kind in ("date", "datetime"):
            if token.kind != "date":
                return None
            parsed = self._parse_date(token.value)
            if parsed is None:
                return None
            value = parsed.date() if slot.kind == "date" else parsed
            base = 1.0
        elif slot.kind == "str":
            if token.kind in ("ident", "quoted"):
                value, base = token.value, 1.0
            elif token.kind == "number":
                if cue < 0.5:
                    return None  # a bare number is not a name
                value, base = token.value, 0.3
            elif token.kind == "word":
                if not self._plain_value(token, slots) or (slot.id_like and cue <= 0):
                    return None
                is_object = self._is_object(token, name_hits)
                if cue <= 0 and not role and not is_object:
                    return None
                # "add jam": the thing added, not where it goes ("to cart c1")
                object_bonus = 0.5 if is_object and not slot.prepositional else 0.0
                value, base = token.value, 0.2 + object_bonus
            else:
                return None
        else:
            return None
        return base + 3 * cue + 2 * role, value

    def _plain_value(self, token: _Token, slots: list[_Slot]) -> bool:
        """Whether a plain word may be a value: not a small word, a unit, a type's name or
        the name of one of the fields."""
        low = token.low
        return not (
            low in STOPWORDS
            or low in PREPOSITIONS
            or low in UNITS
            or low in NEGATIONS
            or low in self.vocabulary
            or len(low) < 2
            or any(self._word_matches_slot(low, slot) for slot in slots)
        )

    def _is_object(self, token: _Token, name_hits: set[int]) -> bool:
        """Whether ``token`` is the first thing named after the type's verb ("add tea")."""
        i = token.index - 1
        while i >= 0:
            before = self.tokens[i]
            if i in name_hits:
                return True
            if before.kind == "number" or before.low in STOPWORDS or before.low in UNITS:
                i -= 1
                continue
            return False
        return False

    def _cue(self, slot: _Slot, token: _Token, name_hits: set[int]) -> float:
        """How plainly the words next to ``token`` name ``slot`` ("invoice 3", "cart c1",
        "21.5 celsius"): the share of its name's words they hold, halved for the type's
        own name ("schedule invoice-c1" for ``schedule_id``)."""
        best = 0.0
        seen: dict[str, float] = {}
        i = token.index - 1
        while i >= 0 and token.index - i <= 3:
            word = self.tokens[i]
            if word.kind not in ("word", "ident") and word.low != "#":
                break
            weight = 0.5 if i in name_hits else 1.0
            for part in self._slot_words(slot, word.low):
                seen[part] = max(seen.get(part, 0.0), weight)
            if not seen and word.low not in STOPWORDS and word.low != "#":
                break
            i -= 1
        if seen:
            best = sum(seen.values()) / len(slot.words)
        if token.index + 1 < len(self.tokens):
            after = self.tokens[token.index + 1]
            parts = self._slot_words(slot, after.low) if after.kind == "word" else set()
            if parts and after.index not in name_hits:
                best = max(best, len(parts) / len(slot.words))
        return min(best, 1.0)

    def _slot_words(self, slot: _Slot, word: str) -> set[str]:
        """The words of ``slot``'s name that ``word`` stands for."""
        if word in STOPWORDS and word not in slot.synonyms:
            return set()
        out = {w for w in slot.words if similar(word, w) >= 0.9}
        if word in slot.synonyms:
            out.add(slot.synonyms[word])
        return out

    def _role(self, slot: _Slot, token: _Token) -> bool:
        """Whether the preposition before ``token`` suits ``slot`` ("from acct-1": source)."""
        i = token.index - 1
        while i >= 0 and token.index - i <= 3:
            word = self.tokens[i]
            if word.kind != "word":
                return False
            if word.low in ROLES:
                return bool(ROLES[word.low] & set(slot.words))
            if (
                word.low not in STOPWORDS
                and not self._slot_words(slot, word.low)
                and (word.low not in UNITS)
            ):
                return False
            i -= 1
        return False

    @staticmethod
    def _number(slot: _Slot, digits: str) -> int | float | Decimal | None:
        if slot.kind == "int":
            if "." in digits:
                whole, _, frac = digits.partition(".")
                return int(whole) if not frac.strip("0") else None
            return int(digits)
        if slot.kind == "decimal":
            try:
                return Decimal(digits)
            except InvalidOperation:
                return None
        return float(digits)

    def _parse_date(self, phrase: str) -> datetime | None:
        import dateparser  # loaded only for a text with a date in it

        base = self.now.astimezone(UTC).replace(tzinfo=None)
        phrase = re.sub(r"^(?:at|on)\s+", "", phrase.strip(), flags=re.IGNORECASE)
        parsed = dateparser.parse(
            phrase,
            languages=["en"],
            settings={
                "RELATIVE_BASE": base,
                "TIMEZONE": self.timezone,
                "TO_TIMEZONE": "UTC",
                "RETURN_AS_TIMEZONE_AWARE": True,
                "PREFER_DATES_FROM": "past",
            },
        )
        return parsed.astimezone(UTC) if parsed is not None else None


# -- the fields of a type ----------------------------------------------------------------


def _own_names(cls: type[Intent]) -> set[str]:
    """How a text names ``cls`` outright: its wire name, or a class name of several words
    (``AuditBalance``; a one-word name such as ``Deposit`` is an ordinary word)."""
    names = {cls.intent_type.lower()}
    if len(split_name(cls.__name__)) > 1:
        names.add(cls.__name__.lower())
    return names


def _slots(cls: type[Intent]) -> list[_Slot]:
    out = []
    for name, info in cls.model_fields.items():
        kind, choices = _kind(info.annotation)
        words = tuple(split_name(name)) or (name.lower(),)
        synonyms: dict[str, str] = {}
        for word in words:
            for synonym in FIELD_SYNONYMS.get(word, ()):
                synonyms.setdefault(synonym, word)
        out.append(_Slot(name, kind, info.is_required(), words, synonyms, choices))
    return out


def _kind(annotation: Any) -> tuple[str, tuple[Any, ...]]:
    """What sort of value a field takes, and its choices (Literal, Enum)."""
    origin = get_origin(annotation)
    if origin in (Union, pytypes.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _kind(args[0])
        kinds = [_kind(a) for a in args]
        for wanted in ("str", "int", "float", "decimal", "datetime", "date"):
            for found in kinds:
                if found[0] == wanted:
                    return found
        return kinds[0] if kinds else ("other", ())
    if origin is Literal:
        return "choice", get_args(annotation)
    if origin in (list, tuple, set, frozenset, Sequence):
        return "list", ()
    if isinstance(annotation, type):
        if issubclass(annotation, bool):
            return "bool", ()
        if issubclass(annotation, enum.Enum):
            return "choice", tuple(annotation)
        if issubclass(annotation, int):
            return "int", ()
        if issubclass(annotation, float):
            return "float", ()
        if issubclass(annotation, Decimal):
            return "decimal", ()
        if issubclass(annotation, datetime):
            return "datetime", ()
        if issubclass(annotation, date):
            return "date", ()
        if issubclass(annotation, str):
            return "str", ()
    return "other", ()


def _choice_text(choice: Any) -> list[str]:
    if isinstance(choice, enum.Enum):
        return [str(choice.name).lower(), str(choice.value).lower()]
    return [str(choice).lower()]


def _closest_choice(slot: _Slot, word: str) -> Any:
    """The choice of ``slot`` that ``word`` names (exactly, or a near spelling)."""
    best: tuple[float, int] | None = None
    chosen: Any = None
    for position, choice in enumerate(slot.choices):
        for text in _choice_text(choice):
            score = 100.0 if text == word else fuzz.ratio(text, word)
            if score >= 85 and (best is None or (score, -position) > best):
                best, chosen = (score, -position), choice
    return chosen
