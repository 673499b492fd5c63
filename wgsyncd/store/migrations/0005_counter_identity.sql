-- Which incarnation of the interface a peer's stored counters were read from
-- (boot id : network namespace : ifindex, see wgsyncd/sources/identity.py).
-- A different one next cycle means the counters restarted: the new reading is
-- all new traffic, even when it already grew past the stored one. NULL: unknown
-- (rows written before this migration, or a host without kernel access).
ALTER TABLE peer_stats ADD COLUMN IF NOT EXISTS iface_id text;

-- Hosts write peer_stats only through the owner's function (migration 0003); it now
-- carries the identity too. Same rules: the caller's bound host only, search_path
-- pinned, nobody but the host group may run it.
DROP FUNCTION wgsyncd_put_stats(text, text[], text[], timestamptz[], bigint[], bigint[], numeric[],
    numeric[], timestamptz[], text[], text[], timestamptz[], bigint[], bigint[]);
CREATE FUNCTION wgsyncd_put_stats(p_host_id text,
    s_interface text[], s_public_key text[], s_latest_handshake timestamptz[], s_rx_bytes bigint[],
    s_tx_bytes bigint[], s_rx_total numeric[], s_tx_total numeric[], s_observed_at timestamptz[],
    s_iface_id text[],
    t_interface text[], t_public_key text[], t_observed_at timestamptz[], t_rx_delta bigint[],
    t_tx_delta bigint[])
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE h text := wgsyncd_writer_host(p_host_id); n bigint := 0; m bigint;
BEGIN
    IF cardinality(s_interface) > 0 THEN
        INSERT INTO peer_stats (host_id, interface, public_key, latest_handshake, rx_bytes, tx_bytes,
            rx_total, tx_total, observed_at, iface_id)
        SELECT h, u.* FROM unnest(s_interface, s_public_key, s_latest_handshake, s_rx_bytes, s_tx_bytes,
            s_rx_total, s_tx_total, s_observed_at, s_iface_id) AS u ORDER BY 2, 3
        ON CONFLICT (host_id, interface, public_key) DO UPDATE SET
            latest_handshake = EXCLUDED.latest_handshake, rx_bytes = EXCLUDED.rx_bytes,
            tx_bytes = EXCLUDED.tx_bytes, rx_total = EXCLUDED.rx_total, tx_total = EXCLUDED.tx_total,
            observed_at = EXCLUDED.observed_at, iface_id = EXCLUDED.iface_id;
        GET DIAGNOSTICS n = ROW_COUNT;
    END IF;
    IF cardinality(t_interface) > 0 THEN
        INSERT INTO peer_traffic AS p (host_id, interface, public_key, observed_at, rx_delta, tx_delta)
        SELECT h, u.* FROM unnest(t_interface, t_public_key, t_observed_at, t_rx_delta, t_tx_delta) AS u
        ORDER BY 2, 3, 4
        ON CONFLICT (host_id, interface, public_key, observed_at) DO UPDATE SET
            rx_delta = p.rx_delta + EXCLUDED.rx_delta, tx_delta = p.tx_delta + EXCLUDED.tx_delta;
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n + m;
    END IF;
    RETURN n;
END $$;
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION wgsyncd_put_stats(text, text[], text[], timestamptz[], bigint[], '
                   'bigint[], numeric[], numeric[], timestamptz[], text[], text[], text[], timestamptz[], '
                   'bigint[], bigint[]) SET search_path = %I, pg_temp', current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION wgsyncd_put_stats(text, text[], text[], timestamptz[], bigint[], bigint[],
    numeric[], numeric[], timestamptz[], text[], text[], text[], timestamptz[], bigint[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wgsyncd_put_stats(text, text[], text[], timestamptz[], bigint[], bigint[],
    numeric[], numeric[], timestamptz[], text[], text[], text[], timestamptz[], bigint[], bigint[])
    TO wgsyncd_host;
