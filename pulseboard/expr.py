"""Placeholder: the ``where`` expression language is being written (see tests/unit/test_expr.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class Expr:
    """A parsed ``where`` expression."""

    def names(self) -> frozenset[str]:
        raise NotImplementedError

    def evaluate(self, row: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def mask(self, columns: Mapping[str, Sequence[Any] | np.ndarray], n: int) -> np.ndarray:
        raise NotImplementedError


def parse(text: str) -> Expr:
    raise NotImplementedError
