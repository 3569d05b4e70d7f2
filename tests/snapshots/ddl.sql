CREATE TABLE IF NOT EXISTS control_ratings (
  "rating_id" VARCHAR,
  "recorded_at" TIMESTAMPTZ,
  "author" VARCHAR,
  "control_id" VARCHAR,
  "area" VARCHAR,
  "control" VARCHAR,
  "documentary" VARCHAR,
  "instrumental" VARCHAR,
  "score" DOUBLE,
  "suggested" VARCHAR,
  "evidence" VARCHAR,
  "comment" VARCHAR
)

CREATE TABLE IF NOT EXISTS evidence (
  "evidence_id" VARCHAR,
  "sha256" VARCHAR,
  "md5" VARCHAR,
  "path" VARCHAR,
  "name" VARCHAR,
  "size" BIGINT,
  "format" VARCHAR,
  "registered_at" TIMESTAMPTZ,
  "registered_by" VARCHAR,
  "status" VARCHAR,
  "ingested_at" TIMESTAMPTZ
)

CREATE TABLE IF NOT EXISTS finding_history (
  "history_id" VARCHAR,
  "finding_id" VARCHAR,
  "version" INTEGER,
  "recorded_at" TIMESTAMPTZ,
  "author" VARCHAR,
  "title" VARCHAR,
  "severity" VARCHAR,
  "status" VARCHAR,
  "description" VARCHAR,
  "comment" VARCHAR
)

CREATE TABLE IF NOT EXISTS finding_rows (
  "ref_id" VARCHAR,
  "finding_id" VARCHAR,
  "recorded_at" TIMESTAMPTZ,
  "author" VARCHAR,
  "action" VARCHAR,
  "table_name" VARCHAR,
  "row_key" JSON,
  "comment" VARCHAR
)

CREATE TABLE IF NOT EXISTS findings (
  "finding_id" VARCHAR,
  "title" VARCHAR,
  "severity" VARCHAR,
  "status" VARCHAR,
  "description" VARCHAR,
  "created_at" TIMESTAMPTZ,
  "created_by" VARCHAR,
  "updated_at" TIMESTAMPTZ,
  "updated_by" VARCHAR,
  "version" INTEGER
)

CREATE TABLE IF NOT EXISTS ingest_runs (
  "evidence_id" VARCHAR,
  "started_at" TIMESTAMPTZ,
  "finished_at" TIMESTAMPTZ,
  "seconds" DOUBLE,
  "tool_version" VARCHAR,
  "records" BIGINT,
  "sessions" BIGINT,
  "warnings" BIGINT,
  "bytes" BIGINT
)

CREATE TABLE IF NOT EXISTS ingest_warnings (
  "evidence_id" VARCHAR,
  "path" VARCHAR,
  "offset" BIGINT,
  "unit" VARCHAR,
  "severity" VARCHAR,
  "code" VARCHAR,
  "message" VARCHAR,
  "count" BIGINT
)

CREATE TABLE IF NOT EXISTS notes (
  "note_id" VARCHAR,
  "recorded_at" TIMESTAMPTZ,
  "author" VARCHAR,
  "text" VARCHAR,
  "table_name" VARCHAR,
  "row_key" JSON,
  "finding_id" VARCHAR,
  "supersedes" VARCHAR
)

-- parquet: packets
CREATE TABLE IF NOT EXISTS packets (
  "evidence_id" VARCHAR,
  "frame" BIGINT,
  "ts_ns" BIGINT,
  "file_offset" BIGINT,
  "caplen" INTEGER,
  "wirelen" INTEGER,
  "interface" INTEGER,
  "linktype" INTEGER,
  "tunnel_depth" UTINYINT,
  "tunnel" VARCHAR,
  "vlan" SMALLINT,
  "inner_vlan" SMALLINT,
  "ethertype" INTEGER,
  "ip_version" UTINYINT,
  "src" VARCHAR,
  "dst" VARCHAR,
  "ip_proto" SMALLINT,
  "src_p" INTEGER,
  "dst_p" INTEGER,
  "ip_len" INTEGER,
  "tcp_flags" SMALLINT,
  "seq" UINTEGER,
  "ack" UINTEGER,
  "window" USMALLINT,
  "payload_offset" BIGINT,
  "payload_len" INTEGER,
  "payload_wire_len" INTEGER,
  "frag" UTINYINT,
  "error" VARCHAR,
  "uid" VARCHAR,
  "is_orig" BOOLEAN
)

CREATE TABLE IF NOT EXISTS sessions (
  "uid" VARCHAR,
  "ts" TIMESTAMPTZ,
  "ts_end" TIMESTAMPTZ,
  "duration" DOUBLE,
  "proto" VARCHAR,
  "ip_proto" SMALLINT,
  "orig_h" VARCHAR,
  "orig_p" INTEGER,
  "resp_h" VARCHAR,
  "resp_p" INTEGER,
  "service" VARCHAR,
  "orig_bytes" BIGINT,
  "resp_bytes" BIGINT,
  "conn_state" VARCHAR,
  "history" VARCHAR,
  "missed_bytes" BIGINT,
  "orig_pkts" BIGINT,
  "orig_ip_bytes" BIGINT,
  "resp_pkts" BIGINT,
  "resp_ip_bytes" BIGINT,
  "vlan" INTEGER,
  "inner_vlan" INTEGER,
  "tunnel" VARCHAR,
  "tunnel_parents" VARCHAR[],
  "source" VARCHAR,
  "evidence_id" VARCHAR,
  "first_frame" BIGINT,
  "last_frame" BIGINT
)

CREATE TABLE IF NOT EXISTS tags (
  "tag_id" VARCHAR,
  "recorded_at" TIMESTAMPTZ,
  "author" VARCHAR,
  "action" VARCHAR,
  "table_name" VARCHAR,
  "row_key" JSON,
  "label" VARCHAR,
  "comment" VARCHAR
)
