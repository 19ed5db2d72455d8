"""``lifeloop demo``: a synthetic brand, Lumi Tea 茶光, whose history goes through the public ingest API."""

from __future__ import annotations

from lifeloop.demo.simulator import Simulation, SimulationSummary, simulate, summarize

__all__ = ["Simulation", "SimulationSummary", "simulate", "summarize"]
