-- wgsyncd schema, version 8: a quota per host on what it adds to the shared database.
--
-- Whatever a host can write, a compromised host can write; until now nothing bounded
-- how much. One host could fill the database's disk (config versions, sealed blobs,
-- sync_status rows, traffic rows with ever new times, peers under ever new keys, comment
-- rewrites) and stop every other host. Now each host has
--   max_interfaces, max_peers   live (not removed) rows it may hold;
--   max_bytes_per_day           bytes of rows it may add or rewrite per UTC day, as
--                               PostgreSQL sizes them (pg_column_size of each new row
--                               version), over every table it writes whose rows can grow:
--                               inserts everywhere, rewrites of interfaces, peers and
--                               server_keys (peer_stats and peer_traffic rewrites are
--                               fixed-size numbers: vacuum keeps their space bounded).
-- A statement past a quota fails (SQLSTATE 53400), so the host's cycle fails with a
-- message naming the quota; other hosts are untouched. The row host_id '*' is the
-- default for hosts without their own row; no row at all means no limit. Only the
-- schema owner sets quotas (`wgsyncd db quota`); a host reads its own row and usage.

CREATE TABLE host_quotas (
    host_id           text PRIMARY KEY,     -- '*' = every host without its own row
    max_interfaces    integer NOT NULL CHECK (max_interfaces >= 0),
    max_peers         integer NOT NULL CHECK (max_peers >= 0),
    max_bytes_per_day bigint NOT NULL CHECK (max_bytes_per_day >= 0)
);
-- a 10,000-peer host syncing every 60 s: 1.4 GiB a day with busy counters, 7.7 GiB if its
-- configuration also changed every minute (README)
INSERT INTO host_quotas VALUES ('*', 1000, 250000, 17179869184);

CREATE TABLE host_usage (
    host_id text NOT NULL,
    day     date NOT NULL,                  -- UTC
    bytes   bigint NOT NULL,
    PRIMARY KEY (host_id, day)
);

ALTER TABLE host_quotas ENABLE ROW LEVEL SECURITY;
ALTER TABLE host_quotas FORCE ROW LEVEL SECURITY;
ALTER TABLE host_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE host_usage FORCE ROW LEVEL SECURITY;
SELECT wgsyncd_secure_table('host_quotas', true);
SELECT wgsyncd_secure_table('host_usage', true);

-- One statement's new row versions, charged to each host they belong to (a statement
-- of the owner's may hold several). Statement-level with a transition table: one
-- usage upsert per host per statement, not per row. SECURITY DEFINER: a host has no
-- privilege on host_usage (an UPDATE grant would let it LOCK the table).
CREATE FUNCTION wgsyncd_charge() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    r record;
    q record;
    today date := (now() AT TIME ZONE 'UTC')::date;
    total bigint;
    first_today boolean;
    cap integer;
BEGIN
    FOR r IN SELECT n.host_id AS h, sum(pg_column_size(n.*))::bigint AS bytes FROM new_rows n GROUP BY 1 LOOP
        SELECT * INTO q FROM host_quotas WHERE host_id IN (r.h, '*') ORDER BY host_id = '*' LIMIT 1;
        INSERT INTO host_usage AS u (host_id, day, bytes) VALUES (r.h, today, r.bytes)
        ON CONFLICT (host_id, day) DO UPDATE SET bytes = u.bytes + EXCLUDED.bytes
        RETURNING u.bytes, (u.xmax = 0) INTO total, first_today;
        IF first_today THEN
            DELETE FROM host_usage WHERE host_id = r.h AND day < today - 40;
        END IF;
        IF q.max_bytes_per_day IS NOT NULL AND total > q.max_bytes_per_day THEN
            RAISE EXCEPTION 'host % wrote % bytes today (UTC) with this statement on %, over its quota of % bytes a day',
                r.h, total, TG_TABLE_NAME, q.max_bytes_per_day USING ERRCODE = 'configuration_limit_exceeded',
                HINT = 'the operator raises it: wgsyncd db quota HOST_ID --max-bytes-per-day N';
        END IF;
        -- live rows: new ones (INSERT), or removed ones brought back (an upsert's UPDATE)
        cap := CASE TG_TABLE_NAME WHEN 'peers' THEN q.max_peers WHEN 'interfaces' THEN q.max_interfaces END;
        IF cap IS NOT NULL THEN
            IF TG_OP = 'INSERT' THEN
                PERFORM wgsyncd_check_live(TG_TABLE_NAME, r.h, cap);
            ELSIF EXISTS (SELECT 1 FROM old_rows o WHERE o.host_id = r.h AND o.removed_at IS NOT NULL) THEN
                PERFORM wgsyncd_check_live(TG_TABLE_NAME, r.h, cap);
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- A host's live (not removed) interfaces or peers against its quota (wgsyncd_charge).
CREATE FUNCTION wgsyncd_check_live(p_table text, p_host text, p_max integer)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE live bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %I WHERE host_id = $1 AND removed_at IS NULL', p_table)
        INTO live USING p_host;
    IF live > p_max THEN
        RAISE EXCEPTION 'host % would hold % %, over its quota of %', p_host, live, p_table, p_max
            USING ERRCODE = 'configuration_limit_exceeded',
            HINT = format('the operator raises it: wgsyncd db quota HOST_ID --max-%s N', p_table);
    END IF;
END $$;
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION wgsyncd_check_live(text, text, integer) SET search_path = %I, pg_temp',
                   current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION wgsyncd_check_live(text, text, integer) FROM PUBLIC;
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION wgsyncd_charge() SET search_path = %I, pg_temp', current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION wgsyncd_charge() FROM PUBLIC;

-- A transition table serves one event only: an insert trigger and an update trigger.
-- Not charged: peer_stats and peer_traffic rewrites (counters, fixed size: vacuum bounds
-- them; the CHECKs below bound their few text and numeric columns) and the hosts row
-- begin_cycle rewrites (bounded by 0007's CHECK and the one below).
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['interfaces', 'peers', 'server_keys', 'peer_stats', 'peer_traffic',
                             'sync_status', 'config_versions', 'config_secrets'] LOOP
        EXECUTE format('CREATE TRIGGER wgsyncd_charge_insert AFTER INSERT ON %I REFERENCING NEW TABLE '
                       'AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge()', t);
    END LOOP;
    -- interfaces and peers: the old rows too, to see removed ones brought back
    FOREACH t IN ARRAY ARRAY['interfaces', 'peers'] LOOP
        EXECUTE format('CREATE TRIGGER wgsyncd_charge_update AFTER UPDATE ON %I REFERENCING OLD TABLE '
                       'AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge()', t);
    END LOOP;
END $$;
CREATE TRIGGER wgsyncd_charge_update AFTER UPDATE ON server_keys
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge();

-- Rows a host rewrites every cycle without a charge must stay bounded in size, or one
-- rewrite could grow a row without limit: the machine fingerprint (32 hex characters),
-- the counter identity (boot id : netns : ifindex) and the totals (numeric).
UPDATE hosts SET machine_fp = NULL WHERE length(machine_fp) > 128;
ALTER TABLE hosts ADD CONSTRAINT hosts_fp_length CHECK (length(machine_fp) <= 128) NOT VALID;
ALTER TABLE hosts VALIDATE CONSTRAINT hosts_fp_length;
UPDATE peer_stats SET iface_id = NULL WHERE length(iface_id) > 256;
DELETE FROM peer_stats WHERE NOT (rx_total BETWEEN 0 AND 1e30 AND tx_total BETWEEN 0 AND 1e30);
ALTER TABLE peer_stats ADD CONSTRAINT peer_stats_bounded
    CHECK (length(iface_id) <= 256 AND rx_total BETWEEN 0 AND 1e30 AND tx_total BETWEEN 0 AND 1e30) NOT VALID;
ALTER TABLE peer_stats VALIDATE CONSTRAINT peer_stats_bounded;
