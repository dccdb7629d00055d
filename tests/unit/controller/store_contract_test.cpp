// One contract, three stores: every case runs against SqlStore on SQLite (a real file), on
// PostgreSQL (a real server this process starts: tests/support/postgres_server.hpp) and the
// in-memory store the job unit tests use, so neither a fake nor a dialect drifts from the
// contract unnoticed.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <stdexcept>
#include <memory>
#include <tuple>

#include "controller/store/sql_connection.hpp"
#include "controller/store/sql_store.hpp"
#include "tests/support/postgres_server.hpp"
#include "tests/support/job_records.hpp"
#include "tests/support/in_memory_store.hpp"

using namespace provisioner;

namespace {

JobRecord job(const std::string& id, const std::string& serial = "SN") {
  return test::queued_job_record(id, serial);
}

struct StoreKind {
  std::string name;
};

// The PostgreSQL server, started once per test process when a case first needs it.
test::PostgresServer* postgres(std::string& why) {
  static std::string why_not;
  static auto server = test::PostgresServer::start(why_not);
  why = why_not;
  return server.get();
}

// A new database on that server, for one case.
std::string fresh_postgres_database() {
  static int n = 0;
  std::string why;
  auto* server = postgres(why);
  if (!server) throw std::runtime_error(why);
  return server->create_database("contract_" + std::to_string(::getpid()) + "_" + std::to_string(++n));
}

class StoreContract : public testing::TestWithParam<StoreKind> {
 protected:
  void SetUp() override {
    if (GetParam().name == "memory") {
      store = std::make_unique<test::InMemoryStore>();
      return;
    }
    if (GetParam().name == "postgres") {
      std::string why;
      ASSERT_NE(postgres(why), nullptr) << why;
      auto opened = SqlStore::open(postgres_database(fresh_postgres_database()));
      ASSERT_TRUE(opened.ok()) << opened.error().message;
      store = std::move(*opened);
      return;
    }
    dir = std::filesystem::temp_directory_path() /
          ("store-contract-" + std::to_string(::getpid()) + "-" +
           testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    auto opened = SqlStore::open(dir / "provisioner.db");
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    store = std::move(*opened);
  }
  void TearDown() override {
    store.reset();
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }
  std::filesystem::path dir;
  std::unique_ptr<Store> store;
};

std::vector<std::string> names(const std::vector<JobEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(e.kind + ":" + e.name);
  return out;
}

}  // namespace

TEST_P(StoreContract, TransitionsAreCompareAndSwapWithOneEventEach) {
  ASSERT_TRUE(store->insert_job(job("a")).ok());
  EXPECT_EQ(store->insert_job(job("a")).error().kind, ErrorKind::conflict);
  EXPECT_TRUE(*store->transition_job("a", JobStatus::queued, JobStatus::provisioning, {}, "go", 2000));
  EXPECT_FALSE(*store->transition_job("a", JobStatus::queued, JobStatus::canceled, {}, "late", 3000));
  EXPECT_TRUE(*store->transition_job("a", JobStatus::provisioning, JobStatus::failed, JobChanges{"x.service", "boom"}, "", 4000));
  auto j = **store->get_job("a");
  EXPECT_EQ(j.status, JobStatus::failed);
  EXPECT_EQ(j.failed_step, "x.service");
  EXPECT_EQ(j.error, "boom");
  EXPECT_EQ(j.updated_ms, 4000);
  auto events = store->job_events("a");
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(names(*events), (std::vector<std::string>{"transition:queued", "transition:provisioning", "transition:failed"}));
  EXPECT_FALSE(store->get_job("missing")->has_value());
}

TEST_P(StoreContract, PhasesOnceAndIntentsOnlyInTheirStatus) {
  ASSERT_TRUE(store->insert_job(job("a")).ok());
  EXPECT_TRUE(*store->record_phase("a", "iso_built", "", 1100));
  EXPECT_FALSE(*store->record_phase("a", "iso_built", "", 1200));
  EXPECT_FALSE(*store->record_phase_if_status("a", "reset_issued", JobStatus::provisioning, "", 1300)) << "still queued";
  ASSERT_TRUE(*store->transition_job("a", JobStatus::queued, JobStatus::provisioning, {}, "", 1400));
  EXPECT_TRUE(*store->record_phase_if_status("a", "reset_issued", JobStatus::provisioning, "", 1500));
  EXPECT_FALSE(*store->record_phase_if_status("a", "reset_issued", JobStatus::provisioning, "", 1600)) << "once";
  EXPECT_FALSE(*store->record_phase_if_status("nope", "reset_issued", JobStatus::provisioning, "", 1600));
  EXPECT_EQ((**store->get_job("a")).phase, "reset_issued");
  auto events = store->job_events("a");
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(names(*events), (std::vector<std::string>{"transition:queued", "phase:iso_built", "transition:provisioning",
                                                      "phase:reset_issued"}));
}

TEST_P(StoreContract, AWithdrawnIntentCanBeRecordedAgain) {
  ASSERT_TRUE(store->insert_job(job("a")).ok());
  ASSERT_TRUE(*store->transition_job("a", JobStatus::queued, JobStatus::provisioning, {}, "", 1000));
  EXPECT_TRUE(*store->record_phase("a", "boot_set", "", 1100));
  EXPECT_TRUE(*store->record_phase_if_status("a", "reset_issued", JobStatus::provisioning, "", 1200));
  EXPECT_TRUE(*store->withdraw_phase("a", "reset_issued", "not sent", 1300));
  EXPECT_FALSE(*store->withdraw_phase("a", "reset_issued", "not sent", 1350)) << "no longer there";
  EXPECT_FALSE(*store->withdraw_phase("nope", "reset_issued", "", 1350));
  EXPECT_EQ((**store->get_job("a")).phase, "boot_set") << "back to the latest remaining phase";
  EXPECT_TRUE(*store->record_phase_if_status("a", "reset_issued", JobStatus::provisioning, "", 1400)) << "recorded again";
  auto events = store->job_events("a");
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(names(*events), (std::vector<std::string>{"transition:queued", "transition:provisioning", "phase:boot_set",
                                                      "phase:reset_issued", "phase_withdrawn:reset_issued",
                                                      "phase:reset_issued"}));
}

TEST_P(StoreContract, ARecipeCanBeRewrittenInPlace) {
  ASSERT_TRUE(store->insert_job(job("a")).ok());
  EXPECT_TRUE(*store->update_job_recipe("a", {{"secrets", {{"k", {{"sealed", "00"}}}}}}, 1100));
  EXPECT_EQ((**store->get_job("a")).recipe["secrets"]["k"]["sealed"], "00");
  EXPECT_FALSE(*store->update_job_recipe("nope", nlohmann::json::object(), 1100));
  EXPECT_TRUE(store->flush_rewrites().ok());
}

TEST_P(StoreContract, MediaOnlyInTheExpectedStatus) {
  ASSERT_TRUE(store->insert_job(job("a")).ok());
  EXPECT_FALSE(*store->set_job_media("a", JobStatus::provisioning, {{"mode", "x"}}, 1100));
  EXPECT_TRUE(*store->set_job_media("a", JobStatus::queued, {{"mode", "dual-cd"}}, 1200));
  EXPECT_EQ((**store->get_job("a")).media, (nlohmann::json{{"mode", "dual-cd"}}));
  EXPECT_EQ(*store->media_in_use(), (std::vector<nlohmann::json>{{{"mode", "dual-cd"}}}));
  EXPECT_FALSE(store->set_job_media("a", JobStatus::queued, R"({"mode":"text"})", 1300).ok())
      << "media are an object, never a string holding one";
}

TEST_P(StoreContract, ReconcileListsUnfinishedAndCanceledUntilCleanedUp) {
  for (auto id : {"a", "b", "c", "d"}) ASSERT_TRUE(store->insert_job(job(id)).ok());
  ASSERT_TRUE(*store->transition_job("b", JobStatus::queued, JobStatus::canceled, {}, "", 1100));
  ASSERT_TRUE(*store->transition_job("c", JobStatus::queued, JobStatus::canceled, {}, "", 1100));
  ASSERT_TRUE(*store->record_phase("c", "cleanup_done", "", 1200));
  ASSERT_TRUE(*store->transition_job("d", JobStatus::queued, JobStatus::failed, {}, "", 1100));
  ASSERT_TRUE(*store->transition_job("d", JobStatus::failed, JobStatus::complete, {}, "", 1200));
  EXPECT_EQ(*store->job_ids_to_reconcile(10), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(*store->job_ids_to_reconcile(1), (std::vector<std::string>{"a"}));
  EXPECT_EQ(*store->count_unfinished_jobs("SN"), 1);
  auto counts = *store->count_jobs_by_status();
  EXPECT_EQ(counts["queued"], 1);
  EXPECT_EQ(counts["canceled"], 2);
  EXPECT_EQ(counts["complete"], 1);
}

TEST_P(StoreContract, ListsNewestFirstWithFiltersAndCursor) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(store->insert_job(job("j" + std::to_string(i), i % 2 ? "odd" : "even")).ok());
  JobFilter all;
  auto page = *store->list_jobs(all);
  ASSERT_EQ(page.size(), 5u);
  EXPECT_EQ(page.front().id, "j4");
  JobFilter odd;
  odd.server_serial = "odd";
  odd.limit = 1;
  auto first = *store->list_jobs(odd);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].id, "j3");
  odd.before_seq = first[0].seq;
  auto second = *store->list_jobs(odd);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].id, "j1");
}

TEST_P(StoreContract, WebhookSignaturesAreRememberedUntilTheyExpire) {
  EXPECT_TRUE(*store->remember_webhook("sig", 1000, 5000));
  EXPECT_FALSE(*store->remember_webhook("sig", 2000, 6000));
  EXPECT_TRUE(*store->remember_webhook("sig", 6000, 9000)) << "expired signatures are forgotten";
}

TEST_P(StoreContract, ServersAreUniqueBySerialAndUpdatedByCompareAndSwap) {
  ServerRecord a{"srv_a", "SN-A", nlohmann::json::object(), 1000, 1000};
  ServerRecord b{"srv_b", "SN-B", nlohmann::json::object(), 1000, 1000};
  ASSERT_TRUE(store->insert_server(a).ok());
  ASSERT_TRUE(store->insert_server(b).ok());
  ServerRecord dup{"srv_c", "SN-A", nlohmann::json::object(), 1000, 1000};
  EXPECT_EQ(store->insert_server(dup).error().kind, ErrorKind::conflict);
  auto changed = a;
  changed.record = {{"x", 1}};
  changed.updated_ms = 2000;
  EXPECT_FALSE(*store->update_server(changed, 999));
  EXPECT_TRUE(*store->update_server(changed, 1000));
  EXPECT_EQ((**store->get_server("srv_a")).record, (nlohmann::json{{"x", 1}}));
  auto page = *store->list_servers(std::string("srv_a"), 10);
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].id, "srv_b");
  EXPECT_TRUE(*store->delete_server("srv_a"));
  EXPECT_FALSE(*store->delete_server("srv_a"));
  EXPECT_TRUE(store->set_setting("k", "v").ok());
  EXPECT_EQ(**store->get_setting("k"), "v");
  EXPECT_FALSE(store->get_setting("none")->has_value());
}

NodeRecord node(const std::string& id, std::vector<std::string> macs, std::int64_t at = 1000) {
  NodeRecord n;
  n.id = id;
  n.record = {{"macs", macs}};
  n.created_ms = n.updated_ms = at;
  return n;
}

TEST_P(StoreContract, NodesAreFoundByAnyIdentifierAndNoIdentifierNamesTwoNodes) {
  auto a = node("node_a", {"52:54:00:00:00:01", "52:54:00:00:00:02"});
  a.record["serial"] = "SER-1";
  a.record["uuid"] = "4c4c4544-0000-1000-8000-000000000001";
  ASSERT_TRUE(store->insert_node(a, "test", "registered").ok());
  for (std::string key : {"mac:52:54:00:00:00:02", "serial:SER-1", "uuid:4c4c4544-0000-1000-8000-000000000001"}) {
    auto found = store->find_node(key);
    ASSERT_TRUE(found.ok() && found->has_value()) << key;
    EXPECT_EQ((*found)->id, "node_a");
  }
  EXPECT_FALSE(store->find_node("mac:52:54:00:00:00:09")->has_value());

  // A second node claiming a MAC of the first: refused, and nothing of it written.
  auto b = node("node_b", {"52:54:00:00:00:03", "52:54:00:00:00:01"});
  auto clash = store->insert_node(b, "test", "");
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.error().kind, ErrorKind::conflict);
  EXPECT_FALSE(store->get_node("node_b")->has_value());
  EXPECT_FALSE(store->find_node("mac:52:54:00:00:00:03")->has_value());

  // An update that would take another node's serial is refused and leaves the record as it was.
  auto c = node("node_c", {"52:54:00:00:00:04"});
  ASSERT_TRUE(store->insert_node(c, "test", "").ok());
  auto c2 = c;
  c2.record["serial"] = "SER-1";
  c2.updated_ms = 2000;
  auto updated = store->update_node(c2, 1000);
  ASSERT_FALSE(updated.ok());
  EXPECT_EQ(updated.error().kind, ErrorKind::conflict);
  EXPECT_EQ((**store->get_node("node_c")).updated_ms, 1000);
  // An update drops identifiers it no longer has: the old MAC names nobody.
  c2.record = {{"macs", {"52:54:00:00:00:05"}}};
  EXPECT_TRUE(*store->update_node(c2, 1000));
  EXPECT_FALSE(store->find_node("mac:52:54:00:00:00:04")->has_value());
  EXPECT_EQ((*store->find_node("mac:52:54:00:00:00:05"))->id, "node_c");
  EXPECT_FALSE(*store->update_node(c2, 1000)) << "stale updated_ms";

  auto page = store->list_nodes(std::nullopt, 1);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 1u);
  EXPECT_EQ((*page)[0].id, "node_a");
  EXPECT_EQ((*store->list_nodes(std::string("node_a"), 10)).size(), 1u);

  EXPECT_TRUE(*store->delete_node("node_a"));
  EXPECT_FALSE(*store->delete_node("node_a"));
  EXPECT_FALSE(store->find_node("serial:SER-1")->has_value());
}

TEST_P(StoreContract, NodeTransitionsAreCompareAndSwapWithWhoAndWhy) {
  ASSERT_TRUE(store->insert_node(node("node_a", {"52:54:00:00:00:01"}), "discovery", "first boot request").ok());
  auto n = **store->get_node("node_a");
  EXPECT_EQ(n.state, NodeState::discovered);
  n.state = NodeState::pending;
  n.record["job_id"] = "job_1";
  n.updated_ms = 2000;
  EXPECT_FALSE(*store->transition_node(n, NodeState::discovered, 999, "api:operator", "stale")) << "changed since read";
  EXPECT_TRUE(*store->transition_node(n, NodeState::discovered, 1000, "api:operator", "job job_1"));
  EXPECT_FALSE(*store->transition_node(n, NodeState::discovered, 2000, "api:operator", "again")) << "no longer discovered";
  auto stored = **store->get_node("node_a");
  EXPECT_EQ(stored.state, NodeState::pending);
  EXPECT_EQ(stored.record.value("job_id", ""), "job_1");
  EXPECT_EQ(stored.created_ms, 1000);
  // update_node never moves the state.
  auto edit = stored;
  edit.state = NodeState::retired;
  edit.updated_ms = 3000;
  EXPECT_TRUE(*store->update_node(edit, 2000));
  EXPECT_EQ((**store->get_node("node_a")).state, NodeState::pending);
  auto events = store->node_events("node_a");
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].from, "");
  EXPECT_EQ((*events)[0].to, "discovered");
  EXPECT_EQ((*events)[0].actor, "discovery");
  EXPECT_EQ((*events)[1].from, "discovered");
  EXPECT_EQ((*events)[1].to, "pending");
  EXPECT_EQ((*events)[1].actor, "api:operator");
  EXPECT_EQ((*events)[1].detail, "job job_1");
  EXPECT_EQ((*events)[1].at_ms, 2000);
}

INSTANTIATE_TEST_SUITE_P(EveryStore, StoreContract,
                         testing::Values(StoreKind{"sqlite"}, StoreKind{"postgres"}, StoreKind{"memory"}),
                         [](const testing::TestParamInfo<StoreKind>& info) { return info.param.name; });

namespace {
FleetRecord fleet_record(const std::string& id) {
  FleetRecord f;
  f.id = id;
  f.spec = {{"max_parallel", 2}, {"canary", 0}, {"max_failures", 0}};
  f.created_ms = f.updated_ms = 1000;
  return f;
}
std::vector<FleetMember> members(int n) {
  std::vector<FleetMember> out;
  for (int i = 0; i < n; ++i) out.push_back(FleetMember{i, "srv_" + std::to_string(i), "SN" + std::to_string(i), "", {}, {}, {}, {}, {}});
  return out;
}
}  // namespace

TEST_P(StoreContract, AFleetMemberIsLaunchedOnceAndOnlyWhileTheFleetRuns) {
  ASSERT_TRUE(store->insert_fleet(fleet_record("f1"), members(3)).ok());
  auto j1 = job("j1", "SN0");
  j1.fleet_id = "f1";
  EXPECT_TRUE(*store->insert_fleet_job(j1, "f1", 0));
  auto again = job("j1b", "SN0");
  EXPECT_FALSE(*store->insert_fleet_job(again, "f1", 0)) << "a member launched twice";
  EXPECT_FALSE(store->get_job("j1b")->has_value()) << "the refused job was stored";
  EXPECT_FALSE(*store->insert_fleet_job(job("jx", "SN9"), "f1", 9)) << "no such member";
  // Paused: nothing launches; the CAS moves it once.
  EXPECT_TRUE(*store->transition_fleet("f1", FleetStatus::running, FleetStatus::paused, "", 2000));
  EXPECT_FALSE(*store->transition_fleet("f1", FleetStatus::running, FleetStatus::paused, "", 2001));
  EXPECT_FALSE(*store->insert_fleet_job(job("j2", "SN1"), "f1", 1));
  EXPECT_TRUE(*store->transition_fleet("f1", FleetStatus::paused, FleetStatus::running, "", 3000));
  EXPECT_TRUE(*store->insert_fleet_job(job("j2", "SN1"), "f1", 1));
  auto m = *store->fleet_members("f1");
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].job_id, "j1");
  EXPECT_EQ(m[0].job_status, JobStatus::queued);
  EXPECT_EQ(m[1].job_id, "j2");
  EXPECT_EQ(m[2].job_id, "");
  EXPECT_FALSE(m[2].job_status.has_value());
  // The outcome is the job's last succeeded/failed/canceled.
  EXPECT_TRUE(*store->transition_job("j1", JobStatus::queued, JobStatus::canceled, {}, "x", 4000));
  EXPECT_EQ((*store->fleet_members("f1"))[0].job_outcome, "canceled");
  // The first reason stays; active fleets are running or paused.
  EXPECT_TRUE(*store->set_fleet_reason("f1", "first", 5000));
  EXPECT_FALSE(*store->set_fleet_reason("f1", "second", 5001));
  EXPECT_EQ((*store->get_fleet("f1"))->reason, "first");
  EXPECT_EQ(*store->active_fleet_ids(), std::vector<std::string>{"f1"});
  EXPECT_TRUE(*store->transition_fleet("f1", FleetStatus::running, FleetStatus::canceled, "by test", 6000));
  EXPECT_TRUE(store->active_fleet_ids()->empty());
  EXPECT_EQ((*store->get_fleet("f1"))->reason, "by test");
  EXPECT_EQ(store->insert_fleet(fleet_record("f1"), members(1)).error().kind, ErrorKind::conflict);
  FleetFilter canceled;
  canceled.status = FleetStatus::canceled;
  EXPECT_EQ(store->list_fleets(canceled)->size(), 1u);
}

// The gates read counts and pages of members, not every member: both agree with the members.
TEST_P(StoreContract, AFleetIsCountedByStatusAndOutcomeAndReadInPages) {
  ASSERT_TRUE(store->insert_fleet(fleet_record("f1"), members(6)).ok());
  ASSERT_TRUE(store->insert_fleet(fleet_record("f2"), members(2)).ok());  // not counted in f1
  for (int i : {0, 1, 2, 4}) {
    auto j = job("j" + std::to_string(i), "SN" + std::to_string(i));
    j.fleet_id = "f1";
    ASSERT_TRUE(*store->insert_fleet_job(j, "f1", i));
  }
  ASSERT_TRUE(*store->transition_job("j0", JobStatus::queued, JobStatus::provisioning, {}, "", 2000));
  ASSERT_TRUE(*store->transition_job("j0", JobStatus::provisioning, JobStatus::succeeded, {}, "", 2001));
  ASSERT_TRUE(*store->transition_job("j1", JobStatus::queued, JobStatus::provisioning, {}, "", 2002));
  ASSERT_TRUE(*store->transition_job("j1", JobStatus::provisioning, JobStatus::failed, {}, "", 2003));
  ASSERT_TRUE(*store->transition_job("j1", JobStatus::failed, JobStatus::complete, {}, "", 2004));
  ASSERT_TRUE(*store->transition_job("j4", JobStatus::queued, JobStatus::canceled, {}, "", 2005));

  std::map<std::tuple<bool, std::string, std::string>, int> counted;
  int total = 0;
  auto rows = store->fleet_counts("f1");  // named: a temporary's contents would dangle
  ASSERT_TRUE(rows);
  for (const auto& r : *rows) {
    counted[{r.launched, r.job_status ? std::string(to_string(*r.job_status)) : "", r.outcome}] += r.count;
    total += r.count;
  }
  EXPECT_EQ(total, 6);
  EXPECT_EQ((counted[{false, "", ""}]), 2);  // positions 3 and 5
  EXPECT_EQ((counted[{true, "succeeded", "succeeded"}]), 1);
  EXPECT_EQ((counted[{true, "complete", "failed"}]), 1);
  EXPECT_EQ((counted[{true, "queued", ""}]), 1);
  EXPECT_EQ((counted[{true, "canceled", "canceled"}]), 1);
  EXPECT_TRUE(store->fleet_counts("none")->empty());

  auto positions = [](const std::vector<FleetMember>& ms) {
    std::vector<int> out;
    for (const auto& m : ms) out.push_back(m.position);
    return out;
  };
  FleetMemberQuery q;
  EXPECT_EQ(positions(*store->fleet_members("f1", q)), (std::vector<int>{0, 1, 2, 3, 4, 5}));
  q.unlaunched_only = true;
  EXPECT_EQ(positions(*store->fleet_members("f1", q)), (std::vector<int>{3, 5}));
  q.limit = 1;
  EXPECT_EQ(positions(*store->fleet_members("f1", q)), (std::vector<int>{3}));
  q.limit = -1;
  q.below_position = 3;
  EXPECT_TRUE(store->fleet_members("f1", q)->empty());
  FleetMemberQuery failed;
  failed.failed_only = true;
  auto f = *store->fleet_members("f1", failed);
  EXPECT_EQ(positions(f), (std::vector<int>{1, 4}));
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0].job_outcome, "failed");
  EXPECT_EQ(f[0].job_status, JobStatus::complete);
  FleetMemberQuery canaries;
  canaries.below_position = 2;
  EXPECT_EQ(positions(*store->fleet_members("f1", canaries)), (std::vector<int>{0, 1}));
}

TEST_P(StoreContract, EveryChangeIsOnTheEventStreamInOrderAndFilterable) {
  int woken = 0;
  store->on_events_written([&] { ++woken; });
  ASSERT_TRUE(store->insert_job(job("a", "SN-A")).ok());
  ASSERT_TRUE(store->insert_fleet(fleet_record("f1"), members(1)).ok());
  auto fj = job("b", "SN0");
  fj.fleet_id = "f1";
  ASSERT_TRUE(*store->insert_fleet_job(fj, "f1", 0));
  ASSERT_TRUE(*store->record_phase("a", "iso_built", "", 2000));
  ASSERT_TRUE(*store->transition_job("b", JobStatus::queued, JobStatus::provisioning, {}, "go", 3000));
  EXPECT_FALSE(*store->transition_job("b", JobStatus::queued, JobStatus::provisioning, {}, "lost", 3001));
  auto all = *store->events_after(0, {}, 100);
  std::vector<std::string> seen;
  for (const auto& e : all) seen.push_back(e.topic + ":" + e.kind + ":" + e.name + ":" + e.job_id);
  EXPECT_EQ(seen, (std::vector<std::string>{"job:transition:queued:a", "fleet:created:running:", "job:transition:queued:b",
                                            "job:phase:iso_built:a", "job:transition:provisioning:b"}));
  for (std::size_t i = 1; i < all.size(); ++i) EXPECT_GT(all[i].seq, all[i - 1].seq);
  EXPECT_EQ(all[0].serial, "SN-A");
  EXPECT_EQ(all[4].from, "queued");
  EXPECT_EQ(all[4].fleet_id, "f1");
  EXPECT_EQ(*store->last_event_seq(), all.back().seq);
  EXPECT_GE(woken, 5);
  // Resume after any id; filters.
  auto after = *store->events_after(all[2].seq, {}, 100);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].seq, all[3].seq);
  EventFilter by_fleet;
  by_fleet.fleet = "f1";
  EXPECT_EQ(store->events_after(0, by_fleet, 100)->size(), 3u);
  EventFilter by_job;
  by_job.job = "a";
  EXPECT_EQ(store->events_after(0, by_job, 100)->size(), 2u);
  EXPECT_EQ(store->events_after(0, {}, 2)->size(), 2u);
}
