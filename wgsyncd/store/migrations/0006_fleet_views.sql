-- wgsyncd schema, version 6: the operator's fleet questions as views (issue 13 item 3).
--
-- Read by `wgsyncd fleet ...` (wgsyncd/fleet.py) and the Grafana dashboard
-- (contrib/grafana/wgsyncd.json). Every view is security_invoker: it runs with the
-- privileges and row-level security of whoever queries it, so a host role sees its
-- own rows through a view exactly as through the tables, and the operator and reader
-- see every host. No view reads config_secrets or host_roles (the reader may not).
--
-- The database is shared and its content untrusted: a compromised host can store any
-- text in its own rows. So an allowed-IPs element that is not an address is skipped
-- (wgsyncd_inet), never cast in a way that would make a view fail for everyone.

-- An address or network from text, NULL when it is not one (PostgreSQL 15 has no
-- pg_input_is_valid). IMMUTABLE: the same text always parses the same way. Not
-- PARALLEL SAFE: the exception block is a subtransaction, which a parallel query
-- refuses. Callers try a strict IPv4 pattern first (no subtransaction), see below.
CREATE FUNCTION wgsyncd_inet(p text) RETURNS inet
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN p::inet;
EXCEPTION WHEN invalid_text_representation OR invalid_parameter_value OR data_exception THEN
    RETURN NULL;
END $$;
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION wgsyncd_inet(text) SET search_path = %I, pg_temp', current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION wgsyncd_inet(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wgsyncd_inet(text) TO wgsyncd_host, wgsyncd_operator, wgsyncd_reader;

-- `wgsyncd fleet find KEY`: a peer key is looked up across every host
CREATE INDEX peers_public_key ON peers (public_key);

-- Hosts and whether they still sync. A host's interval is not stored: it is measured,
-- the median gap between the starts of its last 21 recorded cycles (any result), at
-- least 10 s; with fewer than two cycles it is 300 s (the sync timer's period, the
-- longest wgsyncd ships). state: 'ok' while the last ok cycle finished less than
-- 3 intervals ago, 'stopped' after that, 'never' when no cycle was ever ok.
CREATE VIEW fleet_hosts WITH (security_invoker = true) AS
SELECT h.host_id, h.hostname, h.agent_version, h.first_seen,
       ok.finished_at AS last_ok_at,
       last.started_at AS last_cycle_at, last.status AS last_status, last.message AS last_message,
       iv.interval_s, iv.measured AS interval_measured,
       CASE WHEN ok.finished_at IS NULL THEN 'never'
            WHEN now() - ok.finished_at > make_interval(secs => 3 * iv.interval_s) THEN 'stopped'
            ELSE 'ok' END AS state,
       n.interfaces, n.peers
FROM hosts h
LEFT JOIN LATERAL (
    SELECT s.finished_at FROM sync_status s WHERE s.host_id = h.host_id AND s.status = 'ok'
    ORDER BY s.started_at DESC, s.id DESC LIMIT 1) ok ON true
LEFT JOIN LATERAL (
    SELECT s.started_at, s.status, s.message FROM sync_status s WHERE s.host_id = h.host_id
    ORDER BY s.started_at DESC, s.id DESC LIMIT 1) last ON true
CROSS JOIN LATERAL (
    -- greatest() skips a NULL: the default goes in first, then the floor
    SELECT greatest(10, coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY g.gap), 300))::double precision
               AS interval_s,
           count(g.gap) > 0 AS measured
    FROM (SELECT extract(epoch FROM r.started_at - lag(r.started_at) OVER (ORDER BY r.started_at, r.id)) AS gap
          FROM (SELECT s.started_at, s.id FROM sync_status s WHERE s.host_id = h.host_id
                ORDER BY s.started_at DESC, s.id DESC LIMIT 21) r) g
    WHERE g.gap IS NOT NULL) iv
CROSS JOIN LATERAL (
    SELECT (SELECT count(*) FROM interfaces i WHERE i.host_id = h.host_id AND i.removed_at IS NULL) AS interfaces,
           (SELECT count(*) FROM peers p WHERE p.host_id = h.host_id AND p.removed_at IS NULL) AS peers) n;

-- Every current peer with its handshake and counter totals (no peer_stats row: the
-- kernel never reported it, so no handshake either).
CREATE VIEW fleet_peers WITH (security_invoker = true) AS
SELECT p.host_id, h.hostname, p.interface, p.public_key, p.name, p.allowed_ips, p.endpoint,
       coalesce(p.disabled, false) AS disabled, p.sources,
       s.latest_handshake,
       extract(epoch FROM now() - s.latest_handshake)::bigint AS handshake_age_s,
       coalesce(s.rx_total, 0) AS rx_bytes, coalesce(s.tx_total, 0) AS tx_bytes,
       p.updated_at
FROM peers p
JOIN hosts h ON h.host_id = p.host_id
LEFT JOIN peer_stats s ON s.host_id = p.host_id AND s.interface = p.interface AND s.public_key = p.public_key
WHERE p.removed_at IS NULL;

-- Where a public key lives: peers and interfaces (current and removed), and interface
-- keys the host has retired.
CREATE VIEW fleet_keys WITH (security_invoker = true) AS
SELECT p.public_key, 'peer'::text AS kind, p.host_id, h.hostname, p.interface, p.name, p.sources,
       p.allowed_ips AS addresses, p.endpoint, p.removed_at
FROM peers p JOIN hosts h ON h.host_id = p.host_id
UNION ALL
SELECT i.public_key, 'interface', i.host_id, h.hostname, i.name, NULL, i.sources, i.addresses,
       NULL, i.removed_at
FROM interfaces i JOIN hosts h ON h.host_id = i.host_id
WHERE i.public_key IS NOT NULL
UNION ALL
SELECT k.public_key, 'retired interface key', k.host_id, h.hostname, k.interface, NULL, '{}'::text[],
       NULL, NULL, k.retired_at
FROM server_keys k JOIN hosts h ON h.host_id = k.host_id
WHERE k.retired_at IS NOT NULL;

-- Two current, enabled peers that collide, each pair once. kind 'public_key': the
-- same key on two interfaces (scope 'host') or two hosts ('fleet'). kind
-- 'allowed_ip': two allowed IPs that overlap (&&; scope 'interface', 'host' or
-- 'fleet'); side a is the more specific one (value_a), b the one containing it.
-- Not quadratic: two networks overlap only when the shorter prefix contains the
-- longer, so each network is joined (by hash) to its own prefix at each mask length
-- in use, and && then confirms the pair. A function, so the query runs with its own
-- settings: the planner overestimates the lateral joins by orders of magnitude and
-- JIT-compiled them for seconds (100,000 peers: 6 s of 30), and sorts spilled to disk.
-- SECURITY INVOKER (the default, said here): the caller's row-level security applies.
CREATE FUNCTION wgsyncd_fleet_conflicts()
RETURNS TABLE (kind text, scope text, host_a text, interface_a text, peer_a text, name_a text,
               value_a text, host_b text, interface_b text, peer_b text, name_b text, value_b text)
LANGUAGE sql STABLE SECURITY INVOKER SET jit = off SET work_mem = '64MB' AS $$
WITH live AS MATERIALIZED (
    SELECT host_id, interface, public_key, name, allowed_ips FROM peers
    WHERE removed_at IS NULL AND disabled IS NOT TRUE
), nets AS MATERIALIZED (
    SELECT l.host_id, l.interface, l.public_key, l.name, a.ip AS value, n.net,
           family(n.net) AS fam, masklen(n.net) AS len
    FROM live l
    CROSS JOIN LATERAL unnest(l.allowed_ips) AS a(ip)
    -- a valid dotted quad with an optional prefix length always casts: no subtransaction
    CROSS JOIN LATERAL (SELECT CASE
        WHEN a.ip ~ '^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?$'
        THEN a.ip::inet ELSE wgsyncd_inet(a.ip) END AS net
        OFFSET 0) n  -- parsed once per element, not again for each use of net below
    WHERE n.net IS NOT NULL
), lens AS (
    SELECT DISTINCT fam, len FROM nets
)
SELECT 'public_key'::text,
       CASE WHEN a.host_id = b.host_id THEN 'host' ELSE 'fleet' END,
       a.host_id, a.interface, a.public_key, a.name, a.public_key,
       b.host_id, b.interface, b.public_key, b.name, b.public_key
FROM live a JOIN live b ON b.public_key = a.public_key AND (a.host_id, a.interface) < (b.host_id, b.interface)
UNION ALL
SELECT 'allowed_ip',
       CASE WHEN a.host_id <> b.host_id THEN 'fleet' WHEN a.interface <> b.interface THEN 'host'
            ELSE 'interface' END,
       a.host_id, a.interface, a.public_key, a.name, a.value,
       b.host_id, b.interface, b.public_key, b.name, b.value
FROM nets a
JOIN lens m ON m.fam = a.fam AND m.len <= a.len
JOIN nets b ON b.fam = m.fam AND b.len = m.len AND network(b.net) = network(set_masklen(a.net, m.len))
WHERE a.net && b.net
  AND (a.host_id, a.interface, a.public_key) <> (b.host_id, b.interface, b.public_key)
  AND (b.len < a.len OR (a.host_id, a.interface, a.public_key, a.value) < (b.host_id, b.interface, b.public_key, b.value))
$$;
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION wgsyncd_fleet_conflicts() SET search_path = %I, pg_temp', current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION wgsyncd_fleet_conflicts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wgsyncd_fleet_conflicts() TO wgsyncd_host, wgsyncd_operator, wgsyncd_reader;

CREATE VIEW fleet_conflicts WITH (security_invoker = true) AS
SELECT * FROM wgsyncd_fleet_conflicts();

-- Traffic history with names, for top talkers since T (sum rx_bytes/tx_bytes per peer).
CREATE VIEW fleet_traffic WITH (security_invoker = true) AS
SELECT t.host_id, h.hostname, t.interface, t.public_key, p.name, t.observed_at,
       t.rx_delta AS rx_bytes, t.tx_delta AS tx_bytes
FROM peer_traffic t
JOIN hosts h ON h.host_id = t.host_id
LEFT JOIN peers p ON p.host_id = t.host_id AND p.interface = t.interface AND p.public_key = t.public_key;

REVOKE ALL ON fleet_hosts, fleet_peers, fleet_keys, fleet_conflicts, fleet_traffic FROM PUBLIC;
GRANT SELECT ON fleet_hosts, fleet_peers, fleet_keys, fleet_conflicts, fleet_traffic
    TO wgsyncd_operator, wgsyncd_reader, wgsyncd_host;
