#pragma once
// Schema migrations, applied in order; PRAGMA user_version holds how many have run.
// Append only: never edit a migration that has shipped.
#include <array>
#include <string_view>

namespace provisioner {

inline constexpr std::array<std::string_view, 5> kMigrations = {
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
    R"sql(
-- Fleet runs: one recipe over many servers, launched through gates (canaries, a parallelism
-- cap, a failure budget). spec_json holds the request as accepted; the members are fixed
-- when the fleet is created.
CREATE TABLE fleets (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  id         TEXT NOT NULL UNIQUE,
  status     TEXT NOT NULL,
  spec_json  TEXT NOT NULL,
  reason     TEXT NOT NULL DEFAULT '',
  created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL
);
CREATE INDEX fleets_status ON fleets(status, seq);

-- One row per server in a fleet. job_id is set in the same transaction that inserts the job,
-- and only while it is empty: a member is launched at most once.
CREATE TABLE fleet_members (
  fleet_id  TEXT NOT NULL REFERENCES fleets(id) ON DELETE CASCADE,
  position  INTEGER NOT NULL,
  server_id TEXT NOT NULL,
  serial    TEXT NOT NULL,
  job_id    TEXT NOT NULL DEFAULT '',
  -- The job's last succeeded/failed/canceled, written by the job's transition itself.
  outcome   TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (fleet_id, position)
);
CREATE INDEX fleet_members_job ON fleet_members(job_id);

-- Which fleet launched a job, which node it runs on (for the event stream's filters).
ALTER TABLE jobs ADD COLUMN fleet_id TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN node_id TEXT NOT NULL DEFAULT '';

-- Every change of a job, node or fleet, in one order: the event stream (GET /api/v1/events)
-- reads it, and its seq is the stream's event id (Last-Event-ID resumes from here).
CREATE TABLE events (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  topic      TEXT NOT NULL,
  kind       TEXT NOT NULL,
  name       TEXT NOT NULL,
  from_value TEXT NOT NULL DEFAULT '',
  detail     TEXT NOT NULL DEFAULT '',
  job_id     TEXT NOT NULL DEFAULT '',
  fleet_id   TEXT NOT NULL DEFAULT '',
  node_id    TEXT NOT NULL DEFAULT '',
  serial     TEXT NOT NULL DEFAULT '',
  at_ms      BIGINT NOT NULL
);
CREATE INDEX events_job ON events(job_id, seq);
CREATE INDEX events_fleet ON events(fleet_id, seq);
CREATE INDEX events_node ON events(node_id, seq);
)sql",
    R"sql(
-- A member's job status, kept by the job's own transitions (like outcome): a fleet is counted
-- from its member rows alone, without reading each job's wide row.
ALTER TABLE fleet_members ADD COLUMN job_status TEXT NOT NULL DEFAULT '';
UPDATE fleet_members SET job_status = COALESCE((SELECT status FROM jobs WHERE jobs.id = fleet_members.job_id), '')
  WHERE job_id <> '';
CREATE INDEX fleet_members_counts ON fleet_members(fleet_id, job_status, outcome, job_id);
)sql",
};

}  // namespace provisioner
