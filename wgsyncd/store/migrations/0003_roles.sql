-- wgsyncd schema, version 3: one database, many hosts, no trust between them (issue 11).
--
-- Roles (cluster-wide, so created only if missing: a second database in the same
-- cluster migrates too):
--   wgsyncd_host      one LOGIN role per host, bound to ONE host_id in host_roles
--   wgsyncd_operator  reads every host (restore, history, status --host)
--   wgsyncd_reader    reads the public tables (dashboards), never config_secrets
-- The schema owner (who runs migrations) keeps full access.
--
-- Why writes go through functions: a role with UPDATE, DELETE or TRUNCATE on a table
-- may LOCK it in any mode, and SELECT .. FOR UPDATE needs UPDATE; either would let
-- one host stop every other. So a host role gets SELECT (row-level security shows
-- it its own rows only) and plain INSERT on the append-only tables (a ROW EXCLUSIVE
-- lock conflicts only with SHARE and stronger, which nobody but a migration takes),
-- and every upsert, removal and prune runs in a SECURITY DEFINER function below,
-- owned by the schema owner, acting only on the host_id bound to session_user.
-- session_user, not current_user: SET ROLE cannot change it without superuser.
--
-- The per-host serialisation that used a guessable advisory key is now the row lock
-- on the host's own hosts row (taken by wgsyncd_begin_cycle), which no other host
-- can lock.

DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['wgsyncd_host', 'wgsyncd_operator', 'wgsyncd_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;

-- which LOGIN role syncs which host_id; only the owner writes it (wgsyncd db add-host)
CREATE TABLE host_roles (
    role_name   text PRIMARY KEY,
    host_id     text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- a per-machine fingerprint (derived from machine-id, never the id itself): a second
-- machine claiming a host_id another machine holds is refused instead of overwriting
ALTER TABLE hosts ADD COLUMN machine_fp text;

-- drift is stored only when it changed (issue 11 item 5): NULL = the same list as the
-- latest row of this host whose drift_sha256 is equal and drift is not NULL
ALTER TABLE sync_status ALTER COLUMN drift DROP NOT NULL;
ALTER TABLE sync_status ALTER COLUMN drift DROP DEFAULT;
ALTER TABLE sync_status ADD COLUMN drift_sha256 text;
CREATE INDEX sync_status_drift ON sync_status (host_id, drift_sha256, started_at DESC)
    WHERE drift IS NOT NULL;

-- ---------------------------------------------------------------- identity

-- The host_id bound to the login role of this session (NULL when none).
CREATE FUNCTION wgsyncd_bound_host() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT host_id FROM host_roles WHERE role_name = session_user
$$;

-- The host_id the caller may write: its bound one (which must be the one it names),
-- or any for the schema owner (and superusers). Internal: granted to nobody.
CREATE FUNCTION wgsyncd_writer_host(p_host_id text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER AS $$
DECLARE bound text;
BEGIN
    SELECT host_id INTO bound FROM host_roles WHERE role_name = session_user;
    IF bound IS NOT NULL THEN
        -- add-host refuses such a role; this catches one changed after it was bound
        -- (defence in depth: a role that can grant itself the owner needs no function)
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = session_user AND (rolsuper OR rolcreaterole
                   OR rolcreatedb OR rolreplication OR rolbypassrls))
           OR EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                      JOIN pg_roles r ON r.oid = m.member
                      WHERE r.rolname = session_user AND g.rolname <> 'wgsyncd_host') THEN
            RAISE EXCEPTION 'role % has a privileged attribute (CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS, SUPERUSER) or is a member of a role other than wgsyncd_host; refusing its writes', session_user
                USING ERRCODE = 'insufficient_privilege',
                HINT = 'the operator runs wgsyncd db remove-host, then add-host with a plain role';
        END IF;
        IF bound IS DISTINCT FROM p_host_id THEN
            RAISE EXCEPTION 'role % is bound to host_id %, but this sync is for host_id %', session_user, bound, p_host_id
                USING ERRCODE = 'insufficient_privilege',
                HINT = 'set host_id in wgsyncd.toml to the bound one, or have the operator run wgsyncd db add-host';
        END IF;
        RETURN bound;
    END IF;
    IF pg_has_role(session_user, current_user, 'MEMBER') THEN
        RETURN p_host_id;  -- the schema owner: full access, as before roles existed
    END IF;
    RAISE EXCEPTION 'role % is not bound to any host_id (the operator runs: wgsyncd db add-host % --role %)',
        session_user, p_host_id, session_user USING ERRCODE = 'insufficient_privilege';
END $$;

-- ---------------------------------------------------------------- the cycle's writes

-- First statement of a cycle: check the binding and the machine fingerprint, upsert
-- the hosts row (its row lock serialises two agents of one host_id until commit) and
-- return the previous last_seen / last_sync_id and the transaction's now().
CREATE FUNCTION wgsyncd_begin_cycle(p_host_id text, p_hostname text, p_agent_version text,
                                    p_sync_id uuid, p_machine_fp text)
RETURNS TABLE (prev_seen timestamptz, prev_sync uuid, tx_now timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE
    h text := wgsyncd_writer_host(p_host_id);
    old hosts%ROWTYPE;
BEGIN
    SELECT * INTO old FROM hosts WHERE host_id = h FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        INSERT INTO hosts (host_id, hostname, first_seen, last_seen, agent_version, last_sync_id, machine_fp)
        VALUES (h, p_hostname, now(), now(), p_agent_version, p_sync_id, p_machine_fp)
        ON CONFLICT (host_id) DO NOTHING;
        IF FOUND THEN
            RETURN QUERY SELECT NULL::timestamptz, NULL::uuid, now();
            RETURN;
        END IF;
        -- another agent of this host_id inserted it meanwhile: lock it and go on
        SELECT * INTO old FROM hosts WHERE host_id = h FOR NO KEY UPDATE;
    END IF;
    IF p_machine_fp IS NOT NULL AND old.machine_fp IS NOT NULL AND old.machine_fp <> p_machine_fp THEN
        RAISE EXCEPTION 'host_id % belongs to machine %, this machine is %: two machines share one host_id (a cloned /etc/machine-id?)',
            h, old.machine_fp, p_machine_fp USING ERRCODE = 'unique_violation',
            HINT = 'give one of them its own host_id (systemd-machine-id-setup), or the operator runs wgsyncd db remove-host and add-host again';
    END IF;
    UPDATE hosts SET hostname = p_hostname, last_seen = now(), agent_version = p_agent_version,
        last_sync_id = p_sync_id, machine_fp = coalesce(p_machine_fp, machine_fp)
    WHERE host_id = h;
    RETURN QUERY SELECT old.last_seen, old.last_sync_id, now();
END $$;

-- Config rows, one text[] per column (NULL elements are NULL; arrays and jsonb as
-- their text form). created_at/updated_at are now(): the cycle's transaction time.
CREATE FUNCTION wgsyncd_put_interfaces(p_host_id text,
    c_name text[], c_public_key text[], c_listen_port text[], c_fwmark text[], c_addresses text[],
    c_dns text[], c_mtu text[], c_table_name text[], c_pre_up text[], c_post_up text[],
    c_pre_down text[], c_post_down text[], c_save_config text[], c_conf_path text[],
    c_conf_sha256 text[], c_implementation text[], c_comments text[], c_sources text[],
    c_provenance text[], c_row_hash text[])
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE h text := wgsyncd_writer_host(p_host_id); n bigint;
BEGIN
    INSERT INTO interfaces AS t (host_id, name, public_key, listen_port, fwmark, addresses, dns, mtu,
        table_name, pre_up, post_up, pre_down, post_down, save_config, conf_path, conf_sha256,
        implementation, comments, sources, provenance, row_hash, version, created_at, updated_at, removed_at)
    SELECT h, u.name, u.public_key, u.listen_port::integer, u.fwmark::bigint, u.addresses::text[],
        u.dns::text[], u.mtu::integer, u.table_name, u.pre_up::text[], u.post_up::text[],
        u.pre_down::text[], u.post_down::text[], u.save_config::boolean, u.conf_path, u.conf_sha256,
        u.implementation, u.comments::text[], coalesce(u.sources::text[], '{}'),
        coalesce(u.provenance::jsonb, '{}'), u.row_hash, 1, now(), now(), NULL
    FROM unnest(c_name, c_public_key, c_listen_port, c_fwmark, c_addresses, c_dns, c_mtu,
        c_table_name, c_pre_up, c_post_up, c_pre_down, c_post_down, c_save_config, c_conf_path,
        c_conf_sha256, c_implementation, c_comments, c_sources, c_provenance, c_row_hash)
        AS u(name, public_key, listen_port, fwmark, addresses, dns, mtu, table_name, pre_up, post_up,
             pre_down, post_down, save_config, conf_path, conf_sha256, implementation, comments,
             sources, provenance, row_hash)
    ORDER BY u.name
    ON CONFLICT (host_id, name) DO UPDATE SET public_key = EXCLUDED.public_key,
        listen_port = EXCLUDED.listen_port, fwmark = EXCLUDED.fwmark, addresses = EXCLUDED.addresses,
        dns = EXCLUDED.dns, mtu = EXCLUDED.mtu, table_name = EXCLUDED.table_name,
        pre_up = EXCLUDED.pre_up, post_up = EXCLUDED.post_up, pre_down = EXCLUDED.pre_down,
        post_down = EXCLUDED.post_down, save_config = EXCLUDED.save_config,
        conf_path = EXCLUDED.conf_path, conf_sha256 = EXCLUDED.conf_sha256,
        implementation = EXCLUDED.implementation, comments = EXCLUDED.comments,
        sources = EXCLUDED.sources, provenance = EXCLUDED.provenance, row_hash = EXCLUDED.row_hash,
        updated_at = EXCLUDED.updated_at, removed_at = NULL, version = t.version + 1;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

CREATE FUNCTION wgsyncd_put_peers(p_host_id text,
    c_interface text[], c_public_key text[], c_name text[], c_comments text[], c_allowed_ips text[],
    c_endpoint text[], c_persistent_keepalive text[], c_disabled text[], c_has_preshared_key text[],
    c_preshared_key_fp text[], c_has_private_key text[], c_private_key_fp text[], c_sources text[],
    c_provenance text[], c_row_hash text[])
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE h text := wgsyncd_writer_host(p_host_id); n bigint;
BEGIN
    INSERT INTO peers AS t (host_id, interface, public_key, name, comments, allowed_ips, endpoint,
        persistent_keepalive, disabled, has_preshared_key, preshared_key_fp, has_private_key,
        private_key_fp, sources, provenance, row_hash, version, created_at, updated_at, removed_at)
    SELECT h, u.interface, u.public_key, u.name, u.comments::text[], u.allowed_ips::text[], u.endpoint,
        u.persistent_keepalive::integer, u.disabled::boolean, u.has_preshared_key::boolean,
        u.preshared_key_fp, u.has_private_key::boolean, u.private_key_fp,
        coalesce(u.sources::text[], '{}'), coalesce(u.provenance::jsonb, '{}'), u.row_hash,
        1, now(), now(), NULL
    FROM unnest(c_interface, c_public_key, c_name, c_comments, c_allowed_ips, c_endpoint,
        c_persistent_keepalive, c_disabled, c_has_preshared_key, c_preshared_key_fp,
        c_has_private_key, c_private_key_fp, c_sources, c_provenance, c_row_hash)
        AS u(interface, public_key, name, comments, allowed_ips, endpoint, persistent_keepalive,
             disabled, has_preshared_key, preshared_key_fp, has_private_key, private_key_fp,
             sources, provenance, row_hash)
    ORDER BY u.interface, u.public_key
    ON CONFLICT (host_id, interface, public_key) DO UPDATE SET name = EXCLUDED.name,
        comments = EXCLUDED.comments, allowed_ips = EXCLUDED.allowed_ips, endpoint = EXCLUDED.endpoint,
        persistent_keepalive = EXCLUDED.persistent_keepalive, disabled = EXCLUDED.disabled,
        has_preshared_key = EXCLUDED.has_preshared_key, preshared_key_fp = EXCLUDED.preshared_key_fp,
        has_private_key = EXCLUDED.has_private_key, private_key_fp = EXCLUDED.private_key_fp,
        sources = EXCLUDED.sources, provenance = EXCLUDED.provenance, row_hash = EXCLUDED.row_hash,
        updated_at = EXCLUDED.updated_at, removed_at = NULL, version = t.version + 1;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Set removed_at (and bump version) on config rows that disappeared; config is never deleted.
-- p_interfaces alone: interfaces; with p_public_keys: peers (pairs).
CREATE FUNCTION wgsyncd_mark_removed(p_host_id text, p_interfaces text[], p_public_keys text[])
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE h text := wgsyncd_writer_host(p_host_id); n bigint;
BEGIN
    IF p_public_keys IS NULL THEN
        UPDATE interfaces SET removed_at = now(), updated_at = now(), version = version + 1
        WHERE host_id = h AND removed_at IS NULL AND name = ANY (p_interfaces);
    ELSE
        UPDATE peers SET removed_at = now(), updated_at = now(), version = version + 1
        WHERE host_id = h AND removed_at IS NULL
          AND (interface, public_key) IN (SELECT * FROM unnest(p_interfaces, p_public_keys));
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

CREATE FUNCTION wgsyncd_put_server_keys(p_host_id text, c_interface text[], c_public_key text[],
    c_fingerprint text[], c_first_seen timestamptz[], c_last_seen timestamptz[], c_retired_at timestamptz[])
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE h text := wgsyncd_writer_host(p_host_id); n bigint;
BEGIN
    INSERT INTO server_keys (host_id, interface, public_key, fingerprint, first_seen, last_seen, retired_at)
    SELECT h, u.* FROM unnest(c_interface, c_public_key, c_fingerprint, c_first_seen, c_last_seen,
        c_retired_at) AS u ORDER BY 2, 3
    ON CONFLICT (host_id, interface, public_key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
        last_seen = EXCLUDED.last_seen, retired_at = EXCLUDED.retired_at;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Runtime counters: peer_stats upserted, peer_traffic deltas accumulated per observed_at.
CREATE FUNCTION wgsyncd_put_stats(p_host_id text,
    s_interface text[], s_public_key text[], s_latest_handshake timestamptz[], s_rx_bytes bigint[],
    s_tx_bytes bigint[], s_rx_total numeric[], s_tx_total numeric[], s_observed_at timestamptz[],
    t_interface text[], t_public_key text[], t_observed_at timestamptz[], t_rx_delta bigint[],
    t_tx_delta bigint[])
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE h text := wgsyncd_writer_host(p_host_id); n bigint := 0; m bigint;
BEGIN
    IF cardinality(s_interface) > 0 THEN
        INSERT INTO peer_stats (host_id, interface, public_key, latest_handshake, rx_bytes, tx_bytes,
            rx_total, tx_total, observed_at)
        SELECT h, u.* FROM unnest(s_interface, s_public_key, s_latest_handshake, s_rx_bytes, s_tx_bytes,
            s_rx_total, s_tx_total, s_observed_at) AS u ORDER BY 2, 3
        ON CONFLICT (host_id, interface, public_key) DO UPDATE SET
            latest_handshake = EXCLUDED.latest_handshake, rx_bytes = EXCLUDED.rx_bytes,
            tx_bytes = EXCLUDED.tx_bytes, rx_total = EXCLUDED.rx_total, tx_total = EXCLUDED.tx_total,
            observed_at = EXCLUDED.observed_at;
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

-- Retention: up to p_batch rows per table older than p_cutoff, of the caller's host only.
CREATE FUNCTION wgsyncd_prune(p_host_id text, p_cutoff timestamptz, p_batch integer)
RETURNS TABLE (traffic bigint, status bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE h text := wgsyncd_writer_host(p_host_id); a bigint; b bigint;
BEGIN
    DELETE FROM peer_traffic WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM peer_traffic WHERE host_id = h AND observed_at < p_cutoff LIMIT p_batch));
    GET DIAGNOSTICS a = ROW_COUNT;
    DELETE FROM sync_status WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM sync_status WHERE host_id = h AND started_at < p_cutoff LIMIT p_batch));
    GET DIAGNOSTICS b = ROW_COUNT;
    RETURN QUERY SELECT a, b;
END $$;

-- ---------------------------------------------------------------- privileges

-- nobody but the owner creates objects in this schema (PostgreSQL 15 already does
-- not let PUBLIC create in public; older servers did)
DO $$ BEGIN
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', current_schema());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO wgsyncd_host, wgsyncd_operator, wgsyncd_reader',
                   current_schema());
END $$;

-- Policies and grants for one table with a host_id, whose row-level security the
-- migration has ENABLED and FORCED with plain ALTER TABLE statements (written out per
-- table so a reader of the migrations sees them; this refuses a table without): the
-- owner is subject to it too, through its own allow-all policy; a host sees and inserts
-- only its bound host_id's rows; the operator reads all; the reader reads all unless the
-- table holds secrets. Later migrations do the same for every new table with a host_id
-- (tests/test_store_roles.py fails for a table without).
CREATE FUNCTION wgsyncd_secure_table(p_table regclass, p_reader boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE owner_name text := (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = p_table);
BEGIN
    IF NOT (SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = p_table) THEN
        RAISE EXCEPTION 'table % must ENABLE and FORCE ROW LEVEL SECURITY before its policies', p_table;
    END IF;
    EXECUTE format('CREATE POLICY wgsyncd_owner_all ON %s FOR ALL TO %I USING (true) WITH CHECK (true)',
                   p_table, owner_name);
    EXECUTE format('CREATE POLICY wgsyncd_host_own ON %s FOR ALL TO wgsyncd_host '
                   'USING (host_id = (SELECT wgsyncd_bound_host())) '
                   'WITH CHECK (host_id = (SELECT wgsyncd_bound_host()))', p_table);
    EXECUTE format('CREATE POLICY wgsyncd_operator_read ON %s FOR SELECT TO wgsyncd_operator USING (true)',
                   p_table);
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, wgsyncd_host, wgsyncd_operator, wgsyncd_reader', p_table);
    EXECUTE format('GRANT SELECT ON %s TO wgsyncd_host, wgsyncd_operator', p_table);
    IF p_reader THEN
        EXECUTE format('CREATE POLICY wgsyncd_reader_read ON %s FOR SELECT TO wgsyncd_reader USING (true)',
                       p_table);
        EXECUTE format('GRANT SELECT ON %s TO wgsyncd_reader', p_table);
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION wgsyncd_secure_table(regclass, boolean) FROM PUBLIC;

-- every table with a host_id: row-level security on, and for the owner too
ALTER TABLE hosts ENABLE ROW LEVEL SECURITY;
ALTER TABLE hosts FORCE ROW LEVEL SECURITY;
ALTER TABLE interfaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE interfaces FORCE ROW LEVEL SECURITY;
ALTER TABLE peers ENABLE ROW LEVEL SECURITY;
ALTER TABLE peers FORCE ROW LEVEL SECURITY;
ALTER TABLE server_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE server_keys FORCE ROW LEVEL SECURITY;
ALTER TABLE peer_stats ENABLE ROW LEVEL SECURITY;
ALTER TABLE peer_stats FORCE ROW LEVEL SECURITY;
ALTER TABLE peer_traffic ENABLE ROW LEVEL SECURITY;
ALTER TABLE peer_traffic FORCE ROW LEVEL SECURITY;
ALTER TABLE sync_status ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_status FORCE ROW LEVEL SECURITY;
ALTER TABLE config_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE config_versions FORCE ROW LEVEL SECURITY;
ALTER TABLE config_secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE config_secrets FORCE ROW LEVEL SECURITY;
ALTER TABLE host_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE host_roles FORCE ROW LEVEL SECURITY;

SELECT wgsyncd_secure_table('hosts', true);
SELECT wgsyncd_secure_table('interfaces', true);
SELECT wgsyncd_secure_table('peers', true);
SELECT wgsyncd_secure_table('server_keys', true);
SELECT wgsyncd_secure_table('peer_stats', true);
SELECT wgsyncd_secure_table('peer_traffic', true);
SELECT wgsyncd_secure_table('sync_status', true);
SELECT wgsyncd_secure_table('config_versions', true);
SELECT wgsyncd_secure_table('config_secrets', false);    -- sealed blobs: never the reader
SELECT wgsyncd_secure_table('host_roles', false);        -- bindings: owner writes, operator reads
REVOKE SELECT ON host_roles FROM wgsyncd_host;           -- a host asks wgsyncd_bound_host()

-- the append-only tables a host inserts into directly (ROW EXCLUSIVE: blocks no other host)
GRANT INSERT ON sync_status, config_versions, config_secrets TO wgsyncd_host;
GRANT USAGE ON SEQUENCE sync_status_id_seq TO wgsyncd_host;
-- every role may read which schema version it talks to
REVOKE ALL ON schema_migrations FROM PUBLIC;
GRANT SELECT ON schema_migrations TO wgsyncd_host, wgsyncd_operator, wgsyncd_reader;

-- the three groups may connect to this database, whatever PUBLIC may; revoking CONNECT
-- from PUBLIC is the DBA's call (README: on the cluster's other databases, so a host
-- role reaches only this one), not a migration's: it would cut off existing users
DO $$ BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO wgsyncd_host, wgsyncd_operator, wgsyncd_reader',
                   current_database());
END $$;

-- functions: nobody by default; the host group runs the cycle's writers
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace
             AND p.proname LIKE 'wgsyncd\_%' LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        -- a SECURITY DEFINER function never resolves names through the caller's path
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
    END LOOP;
END $$;
GRANT EXECUTE ON FUNCTION wgsyncd_bound_host(), wgsyncd_begin_cycle(text, text, text, uuid, text),
    wgsyncd_put_interfaces(text, text[], text[], text[], text[], text[], text[], text[], text[], text[],
        text[], text[], text[], text[], text[], text[], text[], text[], text[], text[], text[]),
    wgsyncd_put_peers(text, text[], text[], text[], text[], text[], text[], text[], text[], text[],
        text[], text[], text[], text[], text[], text[]),
    wgsyncd_mark_removed(text, text[], text[]),
    wgsyncd_put_server_keys(text, text[], text[], text[], timestamptz[], timestamptz[], timestamptz[]),
    wgsyncd_put_stats(text, text[], text[], timestamptz[], bigint[], bigint[], numeric[], numeric[],
        timestamptz[], text[], text[], timestamptz[], bigint[], bigint[]),
    wgsyncd_prune(text, timestamptz, integer)
TO wgsyncd_host;
GRANT EXECUTE ON FUNCTION wgsyncd_bound_host() TO wgsyncd_operator, wgsyncd_reader;
