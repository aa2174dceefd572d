"""The capability check alone (``Guard.authorize``), per record, at real cardinality.

``python -m benchmarks.guard``: CPU per record with one token and 10,000 accounts (one
resource each), a hundred tokens, and 20,000 and 50,000 distinct tokens in rotation (each
verified once first, as a worker that has seen them). Printed, not asserted: see the README's
performance section for the figures.
"""

from __future__ import annotations

import argparse
import time

from packetflow import Context, KeyPair, issue_token
from packetflow.core.capability import CapabilityHierarchy
from packetflow.engine.clock import WALL_CLOCK
from packetflow.engine.security.guard import Guard
from packetflow.engine.security.settings import SecuritySettings

CASES = [(1, 10_000), (100, 10_000), (20_000, 10), (50_000, 10)]  # (tokens, accounts)


def per_record(tokens: int, accounts: int, records: int) -> tuple[float, int]:
    """µs of CPU per authorised record, and how many tokens were verified in the timed part."""
    key = KeyPair.generate("bench")
    hierarchy = CapabilityHierarchy({"teller": ["deposit", "withdraw"]})
    guard = Guard(hierarchy, SecuritySettings(trusted_keys=[key]), WALL_CLOCK)
    raws = [
        issue_token(f"holder-{i}", ["teller:account/*"], key=key, ttl="1h").encode()
        for i in range(tokens)
    ]
    required = [(("deposit", f"account/acct-{i:05d}"),) for i in range(accounts)]
    context = Context.new()
    for raw in raws:  # every token seen once, as a running worker would have
        context.__dict__["principal"] = None
        guard.authorize(required[0], raw, b"", context, "bench.Deposit")
    verified = guard.verifications
    began = time.process_time()
    for i in range(records):
        context.__dict__["principal"] = None  # each record names no principal: the holder's
        denial = guard.authorize(
            required[i % accounts], raws[(i * 7919) % tokens], b"", context, "bench.Deposit"
        )
        assert denial is None, denial
    spent = time.process_time() - began
    return spent / records * 1e6, guard.verifications - verified


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    print("| tokens | accounts | µs per record | tokens verified again |")
    print("|---|---|---|---|")
    for tokens, accounts in CASES:
        cost, again = per_record(tokens, accounts, args.records)
        print(f"| {tokens:,} | {accounts:,} | {cost:.2f} | {again:,} |", flush=True)


if __name__ == "__main__":
    main()
