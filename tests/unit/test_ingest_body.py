"""Request bodies: gzip inflation is bounded."""

from __future__ import annotations

import gzip

import pytest

from pulseboard.errors import DecodeError
from pulseboard.service import TooLarge, gunzip


def test_gunzip_inflates_within_the_limit_and_refuses_beyond() -> None:
    body = b"[" + b" " * 5_000 + b"]"
    assert gunzip(gzip.compress(body), 10_000) == body
    with pytest.raises(TooLarge, match="inflates to more than 4000 bytes"):
        gunzip(gzip.compress(body), 4_000)
    with pytest.raises(DecodeError, match="not valid gzip"):
        gunzip(b"not gzip at all", 10_000)
