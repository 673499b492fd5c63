-- wgsyncd schema, version 8: a quota per host on what it adds to the shared database.
--
-- Whatever a host can write, a compromised host can write; until now nothing bounded
-- how much. One host could fill the database's disk (config versions, sealed blobs,
-- sync_status rows, traffic rows with ever new times, peers under ever new keys, comment
-- rewrites) and stop every other host. Now each host has
--   max_interfaces, max_peers   live (not removed) rows it may hold;
--   max_bytes_per_day           bytes of rows it may add or rewrite per UTC day (the
--                               statement's day), as pg_column_size sizes each new row
--                               version before TOAST compression, over every table it
--                               writes whose rows can grow: inserts everywhere, rewrites
--                               of interfaces, peers and server_keys (the counter rewrites
--                               of peer_stats and peer_traffic and the hosts row are
--                               bounded by CHECKs instead: vacuum keeps their space bounded).
-- Nothing past a quota reaches the disk first: the host functions check their arguments'
-- size before writing, and the rows a host inserts directly are charged one by one before
-- each is written.
-- A write past a quota fails (SQLSTATE 53400), so the host's cycle fails with a
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

-- The quota row that applies to a host: its own, else the default ('*'); NULLs: none.
CREATE FUNCTION wgsyncd_quota_of(p_host text) RETURNS host_quotas
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT * FROM host_quotas WHERE host_id IN (p_host, '*') ORDER BY host_id = '*' LIMIT 1
$$;

-- The UTC day a write counts for: the statement's, not the transaction's start (a
-- transaction held open across days must not spend an earlier day's quota).
CREATE FUNCTION wgsyncd_usage_day() RETURNS date
LANGUAGE sql STABLE AS $$ SELECT (statement_timestamp() AT TIME ZONE 'UTC')::date $$;

-- Add ``p_bytes`` to a host's day and fail past its quota. A host's first write of a day
-- also drops its usage rows older than 40 days.
CREATE FUNCTION wgsyncd_add_usage(p_host text, p_bytes bigint, p_what text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    q host_quotas := wgsyncd_quota_of(p_host);
    today date := wgsyncd_usage_day();
    total bigint;
    first_today boolean;
BEGIN
    INSERT INTO host_usage AS u (host_id, day, bytes) VALUES (p_host, today, p_bytes)
    ON CONFLICT (host_id, day) DO UPDATE SET bytes = u.bytes + EXCLUDED.bytes
    RETURNING u.bytes, (u.xmax = 0) INTO total, first_today;
    IF first_today THEN
        DELETE FROM host_usage WHERE host_id = p_host AND day < today - 40;
    END IF;
    IF q.max_bytes_per_day IS NOT NULL AND total > q.max_bytes_per_day THEN
        RAISE EXCEPTION 'host % wrote % bytes today (UTC) with this statement on %, over its quota of % bytes a day',
            p_host, total, p_what, q.max_bytes_per_day USING ERRCODE = 'configuration_limit_exceeded',
            HINT = 'the operator raises it: wgsyncd db quota HOST_ID --max-bytes-per-day N';
    END IF;
END $$;

-- Before a host function writes: would ``p_bytes`` more (its arguments' size, about what
-- it writes) pass the host's quota? Then nothing is written at all (an AFTER trigger
-- alone would fail the statement only once its rows, TOAST, indexes and WAL were on disk).
CREATE FUNCTION wgsyncd_precheck(p_host_id text, p_bytes bigint, p_what text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    h text := wgsyncd_writer_host(p_host_id);
    q host_quotas := wgsyncd_quota_of(h);
    used bigint;
BEGIN
    IF q.max_bytes_per_day IS NULL THEN
        RETURN;
    END IF;
    SELECT bytes INTO used FROM host_usage WHERE host_id = h AND day = wgsyncd_usage_day();
    IF coalesce(used, 0) + p_bytes > q.max_bytes_per_day THEN
        RAISE EXCEPTION 'host % would write % more bytes today (UTC) with %, over its quota of % bytes a day (% used)',
            h, p_bytes, p_what, q.max_bytes_per_day, coalesce(used, 0) USING ERRCODE = 'configuration_limit_exceeded',
            HINT = 'the operator raises it: wgsyncd db quota HOST_ID --max-bytes-per-day N';
    END IF;
END $$;

-- The append-only tables a host inserts into directly (sync_status, config_versions,
-- config_secrets: a few rows a cycle): each row is charged before it is written, so one
-- INSERT ... SELECT stops at the row that passes the quota. The row's host must be the
-- caller's own first: charging another host's usage row would hold its lock.
CREATE FUNCTION wgsyncd_charge_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    PERFORM wgsyncd_add_usage(wgsyncd_writer_host(NEW.host_id), pg_column_size(NEW.*)::bigint, TG_TABLE_NAME);
    RETURN NEW;
END $$;

-- The tables only the owner's functions write (those check the arguments' size first,
-- below): one statement's new row versions, charged to each host they belong to (an owner's
-- statement may hold several). Statement-level with a transition table: one usage upsert
-- per host per statement, not per row.
CREATE FUNCTION wgsyncd_charge() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    r record;
    q host_quotas;
    cap integer;
BEGIN
    FOR r IN SELECT n.host_id AS h, sum(pg_column_size(n.*))::bigint AS bytes FROM new_rows n GROUP BY 1 LOOP
        PERFORM wgsyncd_add_usage(r.h, r.bytes, TG_TABLE_NAME);
        q := wgsyncd_quota_of(r.h);
        -- live rows: new ones (INSERT), or removed ones brought back (an upsert's UPDATE)
        cap := CASE TG_TABLE_NAME WHEN 'peers' THEN q.max_peers WHEN 'interfaces' THEN q.max_interfaces END;
        IF cap IS NOT NULL THEN  -- two branches: old_rows exists in the UPDATE triggers only
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
-- The host functions that write rows check their arguments' size first: each becomes
-- a wrapper of the same signature around the original (renamed *_unchecked, which the
-- host group may no longer run).
DO $$
DECLARE f record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS sig, p.proname AS name, p.pronargs AS n,
                    pg_get_function_identity_arguments(p.oid) AS args
             FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace
             AND p.proname IN ('wgsyncd_put_interfaces', 'wgsyncd_put_peers', 'wgsyncd_put_server_keys',
                               'wgsyncd_put_stats') LOOP
        EXECUTE format('ALTER FUNCTION %s RENAME TO %I', f.sig, f.name || '_unchecked');
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %I(%s) FROM wgsyncd_host', f.name || '_unchecked', f.args);
        EXECUTE format(
            'CREATE FUNCTION %I(%s) RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS '
            '$w$ BEGIN PERFORM wgsyncd_precheck($1, %s, %L); RETURN %I(%s); END $w$',
            f.name, f.args,
            (SELECT string_agg(format('coalesce(pg_column_size($%s), 0)::bigint', i), ' + ')
             FROM generate_series(2, f.n) i),
            f.name, f.name || '_unchecked',
            (SELECT string_agg('$' || i, ', ') FROM generate_series(1, f.n) i));
        EXECUTE format('GRANT EXECUTE ON FUNCTION %I(%s) TO wgsyncd_host', f.name, f.args);
    END LOOP;
END $$;

-- every function this migration made: the schema's search path only, nobody by default
-- (the wrappers above: the host group)
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace
             AND p.proname IN ('wgsyncd_quota_of', 'wgsyncd_usage_day', 'wgsyncd_add_usage',
                               'wgsyncd_precheck', 'wgsyncd_charge_row', 'wgsyncd_charge',
                               'wgsyncd_check_live', 'wgsyncd_put_interfaces', 'wgsyncd_put_peers',
                               'wgsyncd_put_server_keys', 'wgsyncd_put_stats') LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
    END LOOP;
END $$;

-- A transition table serves one event only: an insert trigger and an update trigger.
-- Not charged: peer_stats and peer_traffic rewrites (counters, fixed size: vacuum bounds
-- them; the CHECKs below bound their few text and numeric columns) and the hosts row
-- begin_cycle rewrites (bounded by 0007's CHECK and the one below).
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['interfaces', 'peers', 'server_keys', 'peer_stats', 'peer_traffic'] LOOP
        EXECUTE format('CREATE TRIGGER wgsyncd_charge_insert AFTER INSERT ON %I REFERENCING NEW TABLE '
                       'AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wgsyncd_charge()', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['sync_status', 'config_versions', 'config_secrets'] LOOP
        EXECUTE format('CREATE TRIGGER wgsyncd_charge_insert BEFORE INSERT ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION wgsyncd_charge_row()', t);
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
