-- wgsyncd schema, version 6: the operator's fleet questions as views (issue 13 item 3).
--
-- Read by `wgsyncd fleet ...` (wgsyncd/fleet.py) and the Grafana dashboard
-- (contrib/grafana/wgsyncd.json). Every view is security_invoker: it runs with the
-- privileges and row-level security of whoever queries it; only the operator and
-- reader groups may query them (agents never ask fleet questions), and they see every host. No view reads config_secrets or host_roles (the reader may not).
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
GRANT EXECUTE ON FUNCTION wgsyncd_inet(text) TO wgsyncd_operator, wgsyncd_reader;

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
        AND isfinite(s.started_at) AND isfinite(s.finished_at)
    ORDER BY s.started_at DESC, s.id DESC LIMIT 1) ok ON true
LEFT JOIN LATERAL (
    SELECT s.started_at, s.status, s.message FROM sync_status s WHERE s.host_id = h.host_id
        AND isfinite(s.started_at) AND isfinite(s.finished_at)
    ORDER BY s.started_at DESC, s.id DESC LIMIT 1) last ON true
CROSS JOIN LATERAL (
    SELECT greatest(10, coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY g.gap), 300))::double precision
               AS interval_s,
           count(g.gap) > 0 AS measured
    FROM (SELECT extract(epoch FROM r.started_at - lag(r.started_at) OVER (ORDER BY r.started_at, r.id)) AS gap
          FROM (SELECT s.started_at, s.id FROM sync_status s WHERE s.host_id = h.host_id
                    AND isfinite(s.started_at) AND isfinite(s.finished_at)
                ORDER BY s.started_at DESC, s.id DESC LIMIT 21) r) g
    WHERE g.gap IS NOT NULL) iv
CROSS JOIN LATERAL (
    SELECT (SELECT count(*) FROM interfaces i WHERE i.host_id = h.host_id AND i.removed_at IS NULL) AS interfaces,
           (SELECT count(*) FROM peers p WHERE p.host_id = h.host_id AND p.removed_at IS NULL) AS peers) n;

CREATE VIEW fleet_peers WITH (security_invoker = true) AS
SELECT p.host_id, h.hostname, p.interface, p.public_key, p.name, p.allowed_ips, p.endpoint,
       coalesce(p.disabled, false) AS disabled, p.sources,
       hs.latest_handshake,
       extract(epoch FROM now() - hs.latest_handshake)::bigint AS handshake_age_s,
       coalesce(s.rx_total, 0) AS rx_bytes, coalesce(s.tx_total, 0) AS tx_bytes,
       p.updated_at
FROM peers p
JOIN hosts h ON h.host_id = p.host_id
LEFT JOIN peer_stats s ON s.host_id = p.host_id AND s.interface = p.interface AND s.public_key = p.public_key
CROSS JOIN LATERAL (SELECT CASE WHEN isfinite(s.latest_handshake) THEN s.latest_handshake END
                        AS latest_handshake) hs
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

-- Collisions, linear: a first version returned every colliding pair (one host storing
-- 3,000 peers with 0.0.0.0/0 made 4.6M rows and hid every other host's conflicts).
-- One row per offending peer and value (side a), with one example
-- b and `overlap_count`, how many other peers' values (or interfaces, for a key) collide with
-- it. No pair is ever enumerated: identical networks are grouped first, and groups meet
-- only their containing groups (at most one per prefix length in use), so the work is
-- linear in the number of allowed IPs. Which rows appear, for ordinary
-- data: a value contained in another peer's (b: the nearest such), and for equal
-- networks or keys every holder but the last in (host, interface, key) order (b: the next).
-- scope: the widest among all its collisions. A peer's overlaps with its own allowed
-- IPs do not count (found through the same containing groups: linear too).
CREATE FUNCTION wgsyncd_fleet_conflicts()
RETURNS TABLE (kind text, scope text, host_a text, interface_a text, peer_a text, name_a text,
               value_a text, host_b text, interface_b text, peer_b text, name_b text, value_b text,
               overlap_count bigint)
LANGUAGE sql STABLE SECURITY INVOKER SET jit = off SET work_mem = '64MB' AS $$
WITH live AS MATERIALIZED (
    SELECT host_id, interface, public_key, name, allowed_ips FROM peers
    WHERE removed_at IS NULL AND disabled IS NOT TRUE
), parsed AS MATERIALIZED (
    SELECT l.host_id, l.interface, l.public_key, l.name, a.ip AS value, n.net
    FROM live l
    CROSS JOIN LATERAL unnest(l.allowed_ips) AS a(ip)
    CROSS JOIN LATERAL (SELECT CASE
        WHEN a.ip ~ '^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?$'
        THEN a.ip::inet ELSE wgsyncd_inet(a.ip) END AS net
        OFFSET 0) n
    WHERE n.net IS NOT NULL
), nets AS MATERIALIZED (
    -- one row per peer and network (a peer listing a network twice counts once)
    SELECT row_number() OVER () AS id, d.* FROM (
        SELECT DISTINCT ON (host_id, interface, public_key, family(net), masklen(net), network(net))
               host_id, interface, public_key, name, value,
               family(net) AS fam, masklen(net) AS len, network(net) AS nw
        FROM parsed
        ORDER BY host_id, interface, public_key, family(net), masklen(net), network(net), value) d
), grp AS MATERIALIZED (
    SELECT fam, len, nw, count(*) AS n, min(host_id) AS h_lo, max(host_id) AS h_hi,
           min(ARRAY[host_id, interface]) AS hi_lo, max(ARRAY[host_id, interface]) AS hi_hi,
           (array_agg(jsonb_build_array(host_id, interface, public_key, name, value)
                      ORDER BY host_id, interface, public_key))[1:2] AS firsts
    FROM nets GROUP BY fam, len, nw
), lens AS (
    SELECT DISTINCT fam, len FROM grp
), anc AS MATERIALIZED (
    -- child group -> each group strictly containing it
    SELECT c.fam, c.len, c.nw, p.len AS plen, p.nw AS pnw, p.firsts
    FROM grp c
    JOIN lens m ON m.fam = c.fam AND m.len < c.len
    JOIN grp p ON p.fam = c.fam AND p.len = m.len AND p.nw = network(set_masklen(c.nw, m.len))
), rel AS (
    -- per group, the summed members of every other group overlapping it (up and down)
    SELECT r.fam, r.len, r.nw, sum(g.n) AS n, min(g.h_lo) AS h_lo, max(g.h_hi) AS h_hi,
           min(g.hi_lo) AS hi_lo, max(g.hi_hi) AS hi_hi
    FROM (SELECT fam, len, nw, fam AS ofam, plen AS olen, pnw AS onw FROM anc
          UNION ALL
          SELECT fam, plen, pnw, fam, len, nw FROM anc) r
    JOIN grp g ON g.fam = r.ofam AND g.len = r.olen AND g.nw = r.onw
    GROUP BY r.fam, r.len, r.nw
), mine AS (
    -- a peer's own networks containing one another (child a, ancestor b): no conflict
    SELECT a.id AS a_id, b.id AS b_id
    FROM nets a
    JOIN anc x ON x.fam = a.fam AND x.len = a.len AND x.nw = a.nw
    JOIN nets b ON b.fam = x.fam AND b.len = x.plen AND b.nw = x.pnw AND b.host_id = a.host_id
        AND b.interface = a.interface AND b.public_key = a.public_key
), own AS (
    SELECT m.id, count(*) AS n
    FROM (SELECT a_id AS id FROM mine UNION ALL SELECT b_id FROM mine) m GROUP BY m.id
), up AS (
    -- the nearest containing network held by another peer: the example b
    SELECT DISTINCT ON (a.id) a.id, u.e
    FROM nets a
    JOIN anc x ON x.fam = a.fam AND x.len = a.len AND x.nw = a.nw
    CROSS JOIN LATERAL unnest(x.firsts) WITH ORDINALITY AS u(e, o)
    WHERE (u.e->>0, u.e->>1, u.e->>2) <> (a.host_id, a.interface, a.public_key)
    ORDER BY a.id, x.plen DESC, u.o
), ips AS (
    SELECT a.*, g.n - 1 + coalesce(r.n, 0) - coalesce(o.n, 0) AS overlap_count,
           least(g.h_lo, r.h_lo) AS h_lo, greatest(g.h_hi, r.h_hi) AS h_hi,
           least(g.hi_lo, r.hi_lo) AS hi_lo, greatest(g.hi_hi, r.hi_hi) AS hi_hi,
           lead(jsonb_build_array(a.host_id, a.interface, a.public_key, a.name, a.value))
               OVER (PARTITION BY a.fam, a.len, a.nw ORDER BY a.host_id, a.interface, a.public_key) AS same
    FROM nets a
    JOIN grp g ON g.fam = a.fam AND g.len = a.len AND g.nw = a.nw
    LEFT JOIN rel r ON r.fam = a.fam AND r.len = a.len AND r.nw = a.nw
    LEFT JOIN own o ON o.id = a.id
), keys AS (
    SELECT l.*, count(*) OVER w - 1 AS overlap_count,
           min(l.host_id) OVER w AS h_lo, max(l.host_id) OVER w AS h_hi,
           lead(jsonb_build_array(l.host_id, l.interface, l.public_key, l.name, l.public_key))
               OVER (PARTITION BY l.public_key ORDER BY l.host_id, l.interface) AS next
    FROM live l
    WINDOW w AS (PARTITION BY l.public_key)
)
SELECT 'public_key'::text,
       CASE WHEN k.h_lo <> k.host_id OR k.h_hi <> k.host_id THEN 'fleet' ELSE 'host' END,
       k.host_id, k.interface, k.public_key, k.name, k.public_key,
       k.next->>0, k.next->>1, k.next->>2, k.next->>3, k.next->>4, k.overlap_count
FROM keys k WHERE k.next IS NOT NULL
UNION ALL
SELECT 'allowed_ip',
       CASE WHEN i.h_lo <> i.host_id OR i.h_hi <> i.host_id THEN 'fleet'
            WHEN i.hi_lo <> ARRAY[i.host_id, i.interface] OR i.hi_hi <> ARRAY[i.host_id, i.interface] THEN 'host'
            ELSE 'interface' END,
       i.host_id, i.interface, i.public_key, i.name, i.value,
       b.e->>0, b.e->>1, b.e->>2, b.e->>3, b.e->>4, i.overlap_count
FROM ips i
LEFT JOIN up u ON u.id = i.id
CROSS JOIN LATERAL (SELECT coalesce(u.e, i.same) AS e) b
WHERE b.e IS NOT NULL AND i.overlap_count > 0
$$;
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION wgsyncd_fleet_conflicts() SET search_path = %I, pg_temp', current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION wgsyncd_fleet_conflicts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wgsyncd_fleet_conflicts() TO wgsyncd_operator, wgsyncd_reader;

CREATE VIEW fleet_conflicts WITH (security_invoker = true) AS
SELECT * FROM wgsyncd_fleet_conflicts();
REVOKE ALL ON fleet_conflicts FROM PUBLIC;
GRANT SELECT ON fleet_conflicts TO wgsyncd_operator, wgsyncd_reader;

-- Traffic history with names, for top talkers since T (sum rx_bytes/tx_bytes per peer).
CREATE VIEW fleet_traffic WITH (security_invoker = true) AS
SELECT t.host_id, h.hostname, t.interface, t.public_key, p.name, t.observed_at,
       t.rx_delta AS rx_bytes, t.tx_delta AS tx_bytes
FROM peer_traffic t
JOIN hosts h ON h.host_id = t.host_id
LEFT JOIN peers p ON p.host_id = t.host_id AND p.interface = t.interface AND p.public_key = t.public_key
WHERE isfinite(t.observed_at) AND t.rx_delta >= 0 AND t.tx_delta >= 0;


-- Agents never ask fleet questions: the views are the operator's and the reader's only.
REVOKE ALL ON fleet_hosts, fleet_peers, fleet_keys, fleet_traffic FROM PUBLIC;
GRANT SELECT ON fleet_hosts, fleet_peers, fleet_keys, fleet_traffic TO wgsyncd_operator, wgsyncd_reader;
