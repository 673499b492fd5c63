-- wgsyncd schema, version 10: traffic history per cycle for a day, then per hour.
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

CREATE FUNCTION wgsyncd_rollup_traffic(p_host_id text, p_since timestamptz, p_before timestamptz,
                                       p_batch integer)
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE
    h text := wgsyncd_writer_host(p_host_id);  -- a host role: its bound host_id only
    n bigint;
BEGIN
    WITH gone AS (
        DELETE FROM peer_traffic WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM peer_traffic
            WHERE host_id = h AND observed_at < p_before AND (p_since IS NULL OR observed_at >= p_since)
              AND observed_at <> date_trunc('hour', observed_at, 'UTC')
            LIMIT p_batch))
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

DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION wgsyncd_rollup_traffic(text, timestamptz, timestamptz, integer) '
                   'SET search_path = %I, pg_temp', current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION wgsyncd_rollup_traffic(text, timestamptz, timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wgsyncd_rollup_traffic(text, timestamptz, timestamptz, integer) TO wgsyncd_host;
