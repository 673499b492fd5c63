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
    live bigint;
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
        IF TG_OP = 'INSERT' AND TG_TABLE_NAME = 'peers' AND q.max_peers IS NOT NULL THEN
            SELECT count(*) INTO live FROM peers WHERE host_id = r.h AND removed_at IS NULL;
            IF live > q.max_peers THEN
                RAISE EXCEPTION 'host % would hold % peers, over its quota of %', r.h, live, q.max_peers
                    USING ERRCODE = 'configuration_limit_exceeded',
                    HINT = 'the operator raises it: wgsyncd db quota HOST_ID --max-peers N';
            END IF;
        ELSIF TG_OP = 'INSERT' AND TG_TABLE_NAME = 'interfaces' AND q.max_interfaces IS NOT NULL THEN
            SELECT count(*) INTO live FROM interfaces WHERE host_id = r.h AND removed_at IS NULL;
            IF live > q.max_interfaces THEN
                RAISE EXCEPTION 'host % would hold % interfaces, over its quota of %', r.h, live, q.max_interfaces
                    USING ERRCODE = 'configuration_limit_exceeded',
                    HINT = 'the operator raises it: wgsyncd db quota HOST_ID --max-interfaces N';
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION wgsyncd_charge() SET search_path = %I, pg_temp', current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION wgsyncd_charge() FROM PUBLIC;

-- A transition table serves one event only: an insert trigger and an update trigger.
CREATE TRIGGER wgsyncd_charge_insert AFTER INSERT ON interfaces
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge();
CREATE TRIGGER wgsyncd_charge_update AFTER UPDATE ON interfaces
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge();
CREATE TRIGGER wgsyncd_charge_insert AFTER INSERT ON peers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge();
CREATE TRIGGER wgsyncd_charge_update AFTER UPDATE ON peers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge();
CREATE TRIGGER wgsyncd_charge_insert AFTER INSERT ON server_keys
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge();
CREATE TRIGGER wgsyncd_charge_update AFTER UPDATE ON server_keys
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge();
CREATE TRIGGER wgsyncd_charge_insert AFTER INSERT ON peer_stats
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge();
CREATE TRIGGER wgsyncd_charge_insert AFTER INSERT ON peer_traffic
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge();
CREATE TRIGGER wgsyncd_charge_insert AFTER INSERT ON sync_status
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge();
CREATE TRIGGER wgsyncd_charge_insert AFTER INSERT ON config_versions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge();
CREATE TRIGGER wgsyncd_charge_insert AFTER INSERT ON config_secrets
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge();
