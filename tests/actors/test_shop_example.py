"""topologies/shop.py, the actor example users copy: a checkout asks the warehouse and the
payment service (which fails now and then and is restarted), the order goes to a packer of
the pool, an idle cart is abandoned by its reminder; and it runs as a demo."""

from __future__ import annotations

import subprocess
import sys
import zlib

from support.workerproc import REPO

from packetflow import TestDriver
from topologies import shop


def _flaky(n: int) -> str:
    """A cart id whose first payment the example's provider fails."""
    return next(
        f"cart-{i}" for i in range(1000) if zlib.crc32(f"cart-{i}".encode()) % 5 == 0
    ) if n == 0 else next(
        f"cart-{i}" for i in range(1000) if zlib.crc32(f"cart-{i}".encode()) % 5 != 0
    )  # fmt: skip


def test_a_checkout_reserves_pays_packs_and_ends_the_cart() -> None:
    flaky, steady = _flaky(0), _flaky(1)
    with TestDriver(shop.topology) as driver:
        token = driver.issue("ann", list(shop.TOKENS))
        for cart in (flaky, steady):
            driver.send(shop.AddItem(cart=cart, sku="tea"), token=token)
            driver.send(shop.AddItem(cart=cart, sku="honey"), token=token)
            driver.send(shop.Checkout(cart=cart), token=token)
        driver.advance(10)  # the flaky payment's backoff passes; it is tried again
        done = {c.cart: c for c in driver.emitted("checkouts")}
        assert done[steady] == shop.CheckedOut(cart=steady, items=["tea", "honey"], amount=13)
        assert done[flaky] == shop.CheckedOut(cart=flaky, items=["tea", "honey"], amount=13)
        assert driver.metrics["supervision_restart"]["payments"] == 1
        assert sum(driver.state("packer", p) or 0 for p in ("p1", "p2", "p3")) == 2
        assert driver.state("cart", steady) is None  # checked out: the cart ended
        assert driver.state("warehouse", "main").left["tea"] == 998


def test_an_idle_cart_is_abandoned_by_its_reminder() -> None:
    with TestDriver(shop.topology) as driver:
        token = driver.issue("ann", list(shop.TOKENS))
        driver.send(shop.AddItem(cart="c9", sku="jam"), token=token)
        driver.advance(shop.ABANDON_AFTER - 1)
        driver.send(shop.AddItem(cart="c9", sku="bread"), token=token)  # sets it again
        driver.advance(shop.ABANDON_AFTER - 1)
        assert driver.emitted("abandoned") == []
        driver.advance(2)
        assert driver.emitted("abandoned") == [shop.Abandoned(cart="c9", items=["jam", "bread"])]


def test_the_demo_runs_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "packetflow", "demo", "topologies.shop", "--count", "1500"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for shown in ("cart", "warehouse", "payments", "packer: first", "p1"):
        assert shown in done.stdout, done.stdout
