"""Rows `weight_map_selected` and `weight_map_last`: g's maps at a point of its training (the one
the selection kept, or the last), on the test split under the paper's crop protocol
(`common.score_maps`: GT-known / Top-k loc, Top-k cls, MaxBoxAcc v1 / V2, PxAP)."""

from __future__ import annotations

import functools
from typing import Iterator

from wsol_jax.evaluators.common import Bench, Evaluator as Base, Row, score_maps


class Evaluator(Base):
    def __init__(self, name: str, point: str):
        """`point`: which point of g (`'selected'` or `'last'`; `Bench.g_at`)."""
        super().__init__(name)
        self.point = point

    def run(self, bench: Bench) -> Iterator[Row]:
        g_vars = bench.g_at(self.point)
        yield score_maps(bench, self.name, functools.partial(lambda v, b: bench.map_fn(v, b['image']), g_vars))
