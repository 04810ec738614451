"""Window arithmetic on integer milliseconds, with no state.

Windows are half-open, ``[start_ms, end_ms)``, aligned to the Unix epoch. A tumbling window is
one bucket of ``window_ms``; a sliding window of ``window_ms`` that moves every ``every_ms`` is
the union of ``window_ms // every_ms`` consecutive buckets of ``every_ms``, and ends on a
multiple of ``every_ms``.

A bucket (and every window) is *final* once stream time reaches its end plus the lateness.
An event whose bucket is final when it arrives is *late*: it counts in no window of that
metric and is reported on the late channel instead.
"""

from __future__ import annotations


def bucket_start_ms(time_ms: int, bucket_ms: int) -> int:
    """Start of the bucket of width ``bucket_ms`` that holds ``time_ms`` (floor, also below 0)."""
    return time_ms - time_ms % bucket_ms


def is_final(end_ms: int, lateness_ms: int, stream_time_ms: int) -> bool:
    """Whether a window or bucket ending at ``end_ms`` (exclusive) is final at that stream time."""
    return stream_time_ms >= end_ms + lateness_ms


def windows_containing(time_ms: int, window_ms: int, every_ms: int | None) -> list[tuple[int, int]]:
    """Every window ``(start_ms, end_ms)`` that holds ``time_ms``, earliest first.

    One window for a tumbling metric (``every_ms`` None), else ``window_ms // every_ms`` of them.
    """
    step = every_ms if every_ms is not None else window_ms
    first_end = bucket_start_ms(time_ms, step) + step
    return [(end - window_ms, end) for end in range(first_end, first_end + window_ms, step)]
