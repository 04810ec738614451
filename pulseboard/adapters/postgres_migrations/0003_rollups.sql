-- Hourly rollups of history, so that a series over weeks or months reads one row per hour and
-- label set instead of one per window. A rollup row holds the merge of the hour's windows of
-- one label set (of a metric whose window divides an hour), status 'revised' if any of them is.
--
-- history_rollup_hours has one row per (metric, window length, hour) that history holds
-- windows for. Every write to history bumps the version of the hours it touches, in the same
-- transaction; the rollup of an hour is made from the windows read at some version and counts
-- (rolled = version) only if the version did not move meanwhile. A series uses an hour's
-- rollup rows only while rolled = version, and the hour's windows otherwise: a rollup is
-- never stale, at worst missing.
CREATE TABLE history_rollup_hours (
    metric text COLLATE "C" NOT NULL,
    window_ms bigint NOT NULL CHECK (window_ms > 0),
    hour_start bigint NOT NULL,
    version bigint NOT NULL DEFAULT 1,
    rolled bigint,
    PRIMARY KEY (metric, window_ms, hour_start)
);
CREATE INDEX history_rollup_hours_todo ON history_rollup_hours (hour_start)
    WHERE rolled IS DISTINCT FROM version;

CREATE TABLE history_rollup (
    metric text COLLATE "C" NOT NULL,
    window_ms bigint NOT NULL CHECK (window_ms > 0),
    hour_start bigint NOT NULL,
    labels text COLLATE "C" NOT NULL,
    value_int bigint,
    value_float double precision,
    state bytea NOT NULL,
    status text NOT NULL CHECK (status IN ('final', 'revised')),
    CHECK (value_int IS NULL OR value_float IS NULL),
    PRIMARY KEY (metric, window_ms, hour_start, labels)
);
