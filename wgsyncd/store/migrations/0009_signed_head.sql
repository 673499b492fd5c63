-- wgsyncd schema, version 9: the host's signed word on which config version is its newest.
--
-- Signed versions chain backwards, so a database that withholds or deletes a host's
-- newest versions still shows a valid chain ending at an older one, and restore would
-- put back an old configuration (a revoked peer, an old key) without noticing. Now
-- every committed cycle of a host also signs (its own Ed25519 key, wgsyncd/signing.py
-- SignedHead) "at time T my newest version is N with link L" and keeps it on its hosts
-- row, in the cycle's transaction. Restore checks the newest version it sees against
-- it and shows its time: the database can still show an older signed head, but not
-- make one, so what it withholds shows as an old "vouched at" time.
--
-- Written only through wgsyncd_put_head (a host holds no UPDATE on hosts); the row is
-- rewritten in place every cycle and its new columns are bounded in size (the quota of
-- migration 0008 does not charge hosts rewrites).

ALTER TABLE hosts
    ADD COLUMN head_version   bigint,       -- the newest config version, as the host signed it
    ADD COLUMN head_link      text,         -- that version's link (signing.Signed.link)
    ADD COLUMN head_at        timestamptz,  -- when the host signed this (its clock)
    ADD COLUMN head_signature text;         -- base64 Ed25519 over signing.SignedHead.message()
ALTER TABLE hosts ADD CONSTRAINT hosts_head_bounded
    CHECK (length(head_link) <= 64 AND length(head_signature) <= 128 AND head_version >= 1);

CREATE FUNCTION wgsyncd_put_head(p_host_id text, p_version bigint, p_link text, p_at timestamptz,
                                 p_signature text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $$
DECLARE
    h text := wgsyncd_writer_host(p_host_id);  -- a host role: its bound host_id only
BEGIN
    UPDATE hosts SET head_version = p_version, head_link = p_link, head_at = p_at,
        head_signature = p_signature
    WHERE host_id = h;
END $$;
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION wgsyncd_put_head(text, bigint, text, timestamptz, text) '
                   'SET search_path = %I, pg_temp', current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION wgsyncd_put_head(text, bigint, text, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wgsyncd_put_head(text, bigint, text, timestamptz, text) TO wgsyncd_host;
