-- wgsyncd schema, version 10: history per cycle for a while, then per hour.
--
-- peer_traffic holds one row per active peer per cycle: a 1,000-peer host with 10% of its
-- peers active adds 100 rows a minute (~13 KB with the indexes), so 10,000 such hosts add
-- ~180 GiB a day, 16 TB at the default 90 days of history (README, fleet benchmark).
-- Past the agent's `database.traffic_detail_hours` (24 by default) a host folds its own
-- rows into one per peer per UTC hour: observed_at becomes the hour's start and the
-- deltas are summed. Every sum over a range between two hours is unchanged (fleet top,
-- dashboards, per-peer totals); what is older than the detail window has hour
-- resolution. ~60x fewer rows past the first day at a 60 s interval.
--
-- The fold is idempotent and additive: rows already on an hour are never picked, a
-- bucket split across two calls (the batch bound) adds into the same hour row, and a
-- cycle replayed from a spool days later (its rows at their own, old times) is folded in
-- by the next call. ``p_since`` bounds the scan (NULL: none): the agent looks back over its
-- spool's age, not over every hour row it kept, except once per host (rows from before
-- this migration). A sum is capped at the delta bound of 0007 (2^62 bytes), which no
-- real hour reaches, so a host's own poisoned rows cannot make its pruning fail forever.
-- The hour rows a fold inserts are charged to the host's daily quota (0008's insert
-- trigger) like any row it adds: at most 1/60 of what it wrote.
-- ``p_batch`` is bounded here (0 to 100,000; NULL: 0): a host may pass anything, and
-- LIMIT NULL is no limit, so one call could collect every ctid of its history in one
-- backend's memory (GBs at hundreds of millions of rows: the OOM killer, then a restart
-- of every backend of the cluster). The agent asks for 20,000 (store/retention.py).

CREATE FUNCTION wgsyncd_rollup_traffic(p_host_id text, p_since timestamptz, p_before timestamptz,
                                       p_batch integer)
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE
    h text := wgsyncd_writer_host(p_host_id);  -- a host role: its bound host_id only
    k integer := least(greatest(p_batch, 0), 100000);  -- whatever the caller asks (above)
    n bigint;
BEGIN
    WITH gone AS (
        DELETE FROM peer_traffic WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM peer_traffic
            WHERE host_id = h AND observed_at < p_before AND (p_since IS NULL OR observed_at >= p_since)
              AND observed_at <> date_trunc('hour', observed_at, 'UTC')
            LIMIT k))
        RETURNING interface, public_key, date_trunc('hour', observed_at, 'UTC') AS hour, rx_delta, tx_delta
    ), folded AS (
        INSERT INTO peer_traffic AS p (host_id, interface, public_key, observed_at, rx_delta, tx_delta)
        SELECT h, g.interface, g.public_key, g.hour,
               least(sum(g.rx_delta), 4611686018427387904)::bigint,
               least(sum(g.tx_delta), 4611686018427387904)::bigint
        FROM gone g
        GROUP BY g.interface, g.public_key, g.hour
        ORDER BY 2, 3, 4
        ON CONFLICT (host_id, interface, public_key, observed_at) DO UPDATE SET
            rx_delta = least(p.rx_delta::numeric + EXCLUDED.rx_delta, 4611686018427387904)::bigint,
            tx_delta = least(p.tx_delta::numeric + EXCLUDED.tx_delta, 4611686018427387904)::bigint
        RETURNING 1
    )
    SELECT count(*) INTO n FROM gone;
    RETURN n;
END $$;

-- sync_status: one row a cycle (~0.4 KB), 5.5 GiB a day at 10,000 hosts. Past the agent's
-- window (a day past its spool's age: a replayed cycle finds its row, so nothing is written
-- twice) a host keeps, per UTC hour, its first row and every row that says something: not
-- 'ok', wrote config rows, or holds the only stored copy of a drift list (a row keeps only
-- the hash of a list a newer row holds, and readers look the list up by hash: rows.py),
-- and every ok row next to a row that is not ok (the last ok cycle before a failure and
-- the first after: fleet_hosts.last_ok_at and `wgsyncd status` keep their minute; the
-- newest row a call sees has no next one and stays until a later call sees past it).
-- An idle, healthy host keeps 24 rows a day instead of 1,440.
CREATE FUNCTION wgsyncd_thin_status(p_host_id text, p_since timestamptz, p_before timestamptz,
                                    p_batch integer)
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE
    h text := wgsyncd_writer_host(p_host_id);  -- a host role: its bound host_id only
    k integer := least(greatest(p_batch, 0), 100000);  -- whatever the caller asks (above)
    n bigint;
BEGIN
    DELETE FROM sync_status WHERE ctid = ANY (ARRAY(
        SELECT x.ctid FROM (
            SELECT s.ctid, s.status, s.config_rows_written, s.drift, s.drift_sha256, s.started_at,
                   row_number() OVER (PARTITION BY date_trunc('hour', s.started_at, 'UTC')
                                      ORDER BY s.started_at, s.id) AS rn,
                   lag(s.status) OVER w AS prev, lead(s.status) OVER w AS next
            FROM sync_status s
            WHERE s.host_id = h AND s.started_at < p_before
              AND (p_since IS NULL OR s.started_at >= date_trunc('hour', p_since, 'UTC'))
            WINDOW w AS (ORDER BY s.started_at, s.id)
        ) x
        WHERE x.rn > 1 AND x.status = 'ok' AND x.prev = 'ok' AND x.next = 'ok' AND x.config_rows_written = 0
          AND (x.drift IS NULL OR EXISTS (
              SELECT 1 FROM sync_status d
              WHERE d.host_id = h AND d.drift_sha256 = x.drift_sha256 AND d.drift IS NOT NULL
                AND d.started_at > x.started_at))
        LIMIT k));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- both: the schema's search path only; the host group runs them (bound to its own host_id)
DO $$
DECLARE f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['wgsyncd_rollup_traffic', 'wgsyncd_thin_status'] LOOP
        EXECUTE format('ALTER FUNCTION %I(text, timestamptz, timestamptz, integer) SET search_path = %I, pg_temp',
                       f, current_schema());
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %I(text, timestamptz, timestamptz, integer) FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %I(text, timestamptz, timestamptz, integer) TO wgsyncd_host', f);
    END LOOP;
END $$;

-- 0003's retention function had the same unbounded p_batch (above): the same bound. Its
-- grants stay; its settings are set again (CREATE OR REPLACE drops them).
CREATE OR REPLACE FUNCTION wgsyncd_prune(p_host_id text, p_cutoff timestamptz, p_batch integer)
RETURNS TABLE (traffic bigint, status bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE
    h text := wgsyncd_writer_host(p_host_id);
    k integer := least(greatest(p_batch, 0), 100000);
    a bigint;
    b bigint;
BEGIN
    DELETE FROM peer_traffic WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM peer_traffic WHERE host_id = h AND observed_at < p_cutoff LIMIT k));
    GET DIAGNOSTICS a = ROW_COUNT;
    DELETE FROM sync_status WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM sync_status WHERE host_id = h AND started_at < p_cutoff LIMIT k));
    GET DIAGNOSTICS b = ROW_COUNT;
    RETURN QUERY SELECT a, b;
END $$;
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION wgsyncd_prune(text, timestamptz, integer) SET search_path = %I, pg_temp',
                   current_schema());
END $$;
