"""Benchmarks run by ``pulseboard bench NAME``. They measure; they never assert a speed."""
