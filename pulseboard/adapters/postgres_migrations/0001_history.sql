-- History of closed windows, one partition per UTC day of window_start (epoch milliseconds).
-- Partitions are created on demand by pulseboard/adapters/postgres.py (named history_pYYYYMMDD)
-- and dropped whole by retention; there is no default partition, so a row can never land in a
-- partition that retention would not find by its name.
--
-- The key leads with the series query's equalities (metric, window length) and then its range
-- (window_start), so the primary key's index serves "windows of M of length L in [a, b)".
-- The window length is part of the key: a metric whose window changed in the config keeps its
-- old windows apart from the new ones instead of overwriting those that start at the same instant.
-- The value keeps its Python type: an int in value_int, a float in value_float, None in neither.
-- Texts compare bytewise (COLLATE "C"): labels are canonical JSON, not words to sort by language.
CREATE TABLE history (
    metric text COLLATE "C" NOT NULL,
    window_ms bigint NOT NULL CHECK (window_ms > 0),
    window_start bigint NOT NULL,
    labels text COLLATE "C" NOT NULL,
    value_int bigint,
    value_float double precision,
    state bytea NOT NULL,
    status text NOT NULL CHECK (status IN ('final', 'revised')),
    updated_ms bigint NOT NULL,
    CHECK (value_int IS NULL OR value_float IS NULL),
    PRIMARY KEY (metric, window_ms, window_start, labels)
) PARTITION BY RANGE (window_start);
