#pragma once
// Schema migrations, applied in order; PRAGMA user_version holds how many have run.
// Append only: never edit a migration that has shipped.
#include <array>
#include <string_view>

namespace provisioner {

inline constexpr std::array<std::string_view, 3> kMigrations = {
    R"sql(
CREATE TABLE jobs (
  seq                INTEGER PRIMARY KEY AUTOINCREMENT,
  id                 TEXT NOT NULL UNIQUE,
  status             TEXT NOT NULL,
  phase              TEXT NOT NULL DEFAULT '',
  server_serial      TEXT NOT NULL,
  server_json        TEXT NOT NULL,
  recipe_json        TEXT NOT NULL,
  webhook_key_sealed TEXT NOT NULL,
  failed_step        TEXT NOT NULL DEFAULT '',
  error              TEXT NOT NULL DEFAULT '',
  created_ms         BIGINT NOT NULL,
  updated_ms         BIGINT NOT NULL
);
CREATE INDEX jobs_status ON jobs(status, seq);
CREATE INDEX jobs_serial ON jobs(server_serial, seq);

CREATE TABLE job_events (
  seq     INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id  TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  kind    TEXT NOT NULL,
  name    TEXT NOT NULL,
  from_status TEXT NOT NULL DEFAULT '',
  detail  TEXT NOT NULL DEFAULT '',
  at_ms   BIGINT NOT NULL
);
CREATE INDEX job_events_job ON job_events(job_id, seq);

-- One row per phase a job reached: the primary key is what makes a phase apply once.
CREATE TABLE job_phases (
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  phase  TEXT NOT NULL,
  at_ms  BIGINT NOT NULL,
  PRIMARY KEY (job_id, phase)
);

CREATE TABLE webhook_signatures (
  signature  TEXT PRIMARY KEY,
  expires_ms BIGINT NOT NULL
);
CREATE INDEX webhook_signatures_expiry ON webhook_signatures(expires_ms);
)sql",
    R"sql(
-- Servers known to the controller. The record is JSON (validated by server.schema.json)
-- with the BMC password sealed; serial is a column because it is unique and looked up.
CREATE TABLE servers (
  id          TEXT PRIMARY KEY,
  serial      TEXT NOT NULL UNIQUE,
  record_json TEXT NOT NULL,
  created_ms  BIGINT NOT NULL,
  updated_ms  BIGINT NOT NULL
);

-- What the job boots from and hands over: {"task_iso": {"sha256", "url"}, "boot_iso": {...},
-- "media_mode": "..."}; artifacts named here are kept by garbage collection.
ALTER TABLE jobs ADD COLUMN media_json TEXT NOT NULL DEFAULT '{}';

-- Controller-wide settings that change at run time (e.g. the current maintenance ISO).
CREATE TABLE settings (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
)sql",
    R"sql(
-- Nodes: machines that boot from the network. The record is JSON; the state is a column
-- because boot requests and the DHCP host list select by it.
CREATE TABLE nodes (
  id          TEXT PRIMARY KEY,
  state       TEXT NOT NULL,
  record_json TEXT NOT NULL,
  created_ms  BIGINT NOT NULL,
  updated_ms  BIGINT NOT NULL
);

-- One row per identifier (mac:…, uuid:…, serial:…): the primary key makes each one name
-- at most one node.
CREATE TABLE node_keys (
  key     TEXT PRIMARY KEY,
  node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE
);
CREATE INDEX node_keys_node ON node_keys(node_id);

CREATE TABLE node_events (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  node_id    TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
  from_state TEXT NOT NULL,
  to_state   TEXT NOT NULL,
  actor      TEXT NOT NULL,
  detail     TEXT NOT NULL DEFAULT '',
  at_ms      BIGINT NOT NULL
);
CREATE INDEX node_events_node ON node_events(node_id, seq);
)sql",
};

}  // namespace provisioner
