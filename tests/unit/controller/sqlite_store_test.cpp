// The SQLite store on real files: migrations, compare-and-swap, phases once, replay memory.
#include <gtest/gtest.h>

#include <map>
#include <thread>

#include <sqlite3.h>

#include "controller/store/migrations.hpp"
#include "controller/store/sql_store.hpp"
#include "tests/support/job_records.hpp"
#include "tests/support/controller_process.hpp"

using namespace provisioner;

namespace {

JobRecord job(const std::string& id, const std::string& serial = "SN") {
  return test::queued_job_record(id, serial);
}

}  // namespace

class SqliteStoreTest : public testing::Test {
 protected:
  std::unique_ptr<SqlStore> open() {
    auto s = SqlStore::open(dir.path() / "store.db");
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
    return std::move(*s);
  }
  test::TempDir dir;
};

TEST_F(SqliteStoreTest, MigratesOnceAndUsesWal) {
  {
    auto s = open();
    EXPECT_EQ(s->schema_version(), static_cast<int>(kMigrations.size()));
    ASSERT_TRUE(s->insert_job(job("a")).ok());
  }
  auto s = open();  // reopening applies nothing twice and keeps the data
  EXPECT_EQ(s->schema_version(), static_cast<int>(kMigrations.size()));
  EXPECT_TRUE((*s->get_job("a"))->id == "a");
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "store.db-wal"));
}

TEST_F(SqliteStoreTest, DuplicateIdIsAConflict) {
  auto s = open();
  ASSERT_TRUE(s->insert_job(job("a")).ok());
  auto again = s->insert_job(job("a"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind, ErrorKind::conflict);
}

TEST_F(SqliteStoreTest, TransitionIsCompareAndSwap) {
  auto s = open();
  ASSERT_TRUE(s->insert_job(job("a")).ok());
  EXPECT_TRUE(*s->transition_job("a", JobStatus::queued, JobStatus::provisioning, {}, "go", 2000));
  EXPECT_FALSE(*s->transition_job("a", JobStatus::queued, JobStatus::canceled, {}, "late", 3000)) << "stale expectation must lose";
  EXPECT_TRUE(*s->transition_job("a", JobStatus::provisioning, JobStatus::failed, JobChanges{"x.service", "boom"}, "", 4000));
  auto j = **s->get_job("a");
  EXPECT_EQ(j.status, JobStatus::failed);
  EXPECT_EQ(j.failed_step, "x.service");
  EXPECT_EQ(j.updated_ms, 4000);
  auto events = *s->job_events("a");
  ASSERT_EQ(events.size(), 3u);  // created, provisioning, failed — nothing for the lost swap
  EXPECT_EQ(events[1].from, "queued");
  EXPECT_EQ(events[2].name, "failed");
}

TEST_F(SqliteStoreTest, ConcurrentSwapsApplyExactlyOnce) {
  auto s = open();
  ASSERT_TRUE(s->insert_job(job("a")).ok());
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] {
      if (*s->transition_job("a", JobStatus::queued, JobStatus::provisioning, {}, "", 2000)) ++wins;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(wins, 1);
}

TEST_F(SqliteStoreTest, PhaseIsRecordedOnce) {
  auto s = open();
  ASSERT_TRUE(s->insert_job(job("a")).ok());
  EXPECT_TRUE(*s->record_phase("a", "reset_issued", "", 2000));
  EXPECT_FALSE(*s->record_phase("a", "reset_issued", "", 3000));
  EXPECT_EQ((**s->get_job("a")).phase, "reset_issued");
  EXPECT_EQ(s->job_events("a")->size(), 2u);
}

// An intent phase is recorded only while the job is in the expected status: after a
// committed cancel it is refused and leaves nothing behind.
TEST_F(SqliteStoreTest, ConditionalPhaseLosesToACommittedTransition) {
  auto s = open();
  ASSERT_TRUE(s->insert_job(job("a")).ok());
  ASSERT_TRUE(*s->transition_job("a", JobStatus::queued, JobStatus::provisioning, {}, "go", 1500));
  EXPECT_TRUE(*s->record_phase_if_status("a", "boot_set", JobStatus::provisioning, "", 1600));
  ASSERT_TRUE(*s->transition_job("a", JobStatus::provisioning, JobStatus::canceled, {}, "canceled", 1700));
  EXPECT_FALSE(*s->record_phase_if_status("a", "reset_issued", JobStatus::provisioning, "", 1800));
  EXPECT_EQ((**s->get_job("a")).phase, "boot_set");
  auto events = s->job_events("a");
  ASSERT_TRUE(events.ok());
  for (const auto& e : *events) EXPECT_NE(e.name, "reset_issued");
  EXPECT_FALSE(*s->record_phase_if_status("missing", "reset_issued", JobStatus::provisioning, "", 1900));
  // Unconditional facts are still recorded on a canceled job (cleanup needs them).
  EXPECT_TRUE(*s->record_phase("a", "media_inserted", "", 2000));
}

TEST_F(SqliteStoreTest, WebhookSignaturesRememberedUntilExpiry) {
  auto s = open();
  EXPECT_TRUE(*s->remember_webhook("sig1", 1000, 5000));
  EXPECT_FALSE(*s->remember_webhook("sig1", 2000, 6000));
  EXPECT_TRUE(*s->remember_webhook("sig1", 7000, 9000)) << "expired entries are pruned";
}

TEST_F(SqliteStoreTest, ListFiltersAndPages) {
  auto s = open();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s->insert_job(job("j" + std::to_string(i), i % 2 ? "odd" : "even")).ok());
  JobFilter f;
  f.limit = 2;
  auto page1 = *s->list_jobs(f);
  ASSERT_EQ(page1.size(), 2u);
  EXPECT_EQ(page1[0].id, "j4");
  f.before_seq = page1.back().seq;
  auto page2 = *s->list_jobs(f);
  EXPECT_EQ(page2[0].id, "j2");
  JobFilter odd;
  odd.server_serial = "odd";
  EXPECT_EQ(s->list_jobs(odd)->size(), 2u);
  EXPECT_EQ(s->count_jobs_by_status()->at("queued"), 5);
}

TEST_F(SqliteStoreTest, RefusesADatabaseFromTheFuture) {
  { ASSERT_TRUE(open()->insert_job(job("a")).ok()); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir.path() / "store.db").c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  EXPECT_FALSE(SqlStore::open(dir.path() / "store.db").ok());
}

// Migration 5 keeps each fleet member's job status on the member row: a database written
// before it is backfilled from the jobs, so its fleets count the same after the upgrade.
TEST_F(SqliteStoreTest, UpgradeBackfillsTheFleetMembersJobStatus) {
  {
    auto s = open();
    FleetRecord fleet;
    fleet.id = "f1";
    std::vector<FleetMember> members(2);
    members[0].position = 0, members[0].server_id = "s0", members[0].serial = "SN0";
    members[1].position = 1, members[1].server_id = "s1", members[1].serial = "SN1";
    ASSERT_TRUE(s->insert_fleet(fleet, members).ok());
    ASSERT_TRUE(*s->insert_fleet_job(job("j0", "SN0"), "f1", 0));
    ASSERT_TRUE(*s->transition_job("j0", JobStatus::queued, JobStatus::provisioning, {}, "go", 2000));
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir.path() / "store.db").c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP INDEX fleet_members_counts; ALTER TABLE fleet_members DROP COLUMN job_status; "
                         "PRAGMA user_version = 4",
                         nullptr, nullptr, &err),
            SQLITE_OK)
      << (err ? err : "");
  sqlite3_close(db);
  auto s = open();
  EXPECT_EQ(s->schema_version(), static_cast<int>(kMigrations.size()));
  auto counts = s->fleet_counts("f1");
  ASSERT_TRUE(counts.ok());
  std::map<std::string, int> by;
  for (const auto& r : *counts)
    by[std::string(r.launched ? "launched:" : "unlaunched:") + (r.job_status ? std::string(to_string(*r.job_status)) : std::string())] += r.count;
  EXPECT_EQ(by, (std::map<std::string, int>{{"launched:provisioning", 1}, {"unlaunched:", 1}}));
}
