from __future__ import annotations

import sqlalchemy as sa

from tests.conftest import Brand
from tests.journeys.world import World

CART = """
key: cart_abandonment
name: {zh-CN: 购物车挽回, en: Cart abandonment}
trigger: {kind: event, event: Checkout Started}
goal: {event: Order Completed, within: 3d}
steps:
  - {key: wait_order, type: wait_for, event: Order Completed, timeout: 1h,
     match: {cart_id: cart_id}, on_event: bought}
  - {key: remind, type: send, channel: line, template: cart_reminder}
  - {key: done, type: exit, reason: reminded}
  - {key: bought, type: exit, reason: bought}
"""


def test_cart_abandonment(engine: sa.Engine, brand: Brand) -> None:
    world = World(engine, brand)
    world.template("cart_reminder")
    world.journey(CART)
    world.send("ann", "Checkout Started", {"cart_id": "c1", "sku": "TEA"})
    world.send("bob", "Checkout Started", {"cart_id": "c2"})
    world.send("bob", "Order Completed", {"cart_id": "c2", "revenue": 100})
    assert world.state("bob") == [("exited", "wait_order", "goal")]
    world.move("30m")
    assert world.sends() == []
    world.move("31m")
    assert world.sends() == [("ann", "line", "cart_reminder")]
    assert world.state("ann") == [("exited", "done", "reminded")]
