import pytest

from pulseboard.windows import bucket_start_ms, is_final, windows_containing


@pytest.mark.parametrize(
    ("time_ms", "bucket_ms", "start"),
    [
        (0, 60_000, 0),
        (59_999, 60_000, 0),
        (60_000, 60_000, 60_000),
        (61_234, 1_000, 61_000),
        (-1, 60_000, -60_000),
        (-60_000, 60_000, -60_000),
    ],
)
def test_bucket_start(time_ms: int, bucket_ms: int, start: int) -> None:
    assert bucket_start_ms(time_ms, bucket_ms) == start


@pytest.mark.parametrize(
    ("end_ms", "lateness_ms", "stream_ms", "final"),
    [
        (60_000, 30_000, 89_999, False),
        (60_000, 30_000, 90_000, True),
        (60_000, 0, 60_000, True),
        (60_000, 0, 59_999, False),
    ],
)
def test_is_final(end_ms: int, lateness_ms: int, stream_ms: int, final: bool) -> None:
    assert is_final(end_ms, lateness_ms, stream_ms) is final


@pytest.mark.parametrize(
    ("time_ms", "window_ms", "every_ms", "windows"),
    [
        (61_000, 60_000, None, [(60_000, 120_000)]),
        (1_500, 3_000, 1_000, [(-1_000, 2_000), (0, 3_000), (1_000, 4_000)]),
        (2_000, 3_000, 1_000, [(0, 3_000), (1_000, 4_000), (2_000, 5_000)]),
        (0, 2_000, 2_000, [(0, 2_000)]),
    ],
)
def test_windows_containing(
    time_ms: int, window_ms: int, every_ms: int | None, windows: list[tuple[int, int]]
) -> None:
    assert windows_containing(time_ms, window_ms, every_ms) == windows
