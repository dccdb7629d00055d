#include "controller/store/sql_store.hpp"

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "controller/nodes/node_identity.hpp"
#include "controller/store/migrations.hpp"
#include "controller/store/sql_connection.hpp"

namespace provisioner {

namespace {

Error db_error(SqlConnection* db, const std::string& what) {
  return make_error(ErrorKind::internal, what + ": " + db->last_error());
}

// A prepared statement, reset on scope exit so the cached one can be reused.
class Stmt {
 public:
  Stmt(SqlStatement* s) : s_(s) {}
  ~Stmt() { s_->reset(); }
  Stmt& bind(int i, const std::string& v) {
    s_->bind_text(i, v);
    return *this;
  }
  Stmt& bind(int i, std::int64_t v) {
    s_->bind_integer(i, v);
    return *this;
  }
  Step step() { return s_->step(); }
  std::string text(int col) const { return s_->text(col); }
  std::int64_t integer(int col) const { return s_->integer(col); }

 private:
  SqlStatement* s_;
};

constexpr const char* kJobColumns =
    "id, seq, status, phase, server_serial, server_json, recipe_json, webhook_key_sealed, failed_step, error, "
    "created_ms, updated_ms, media_json, fleet_id, node_id";

std::string status_text(JobStatus status) { return std::string(to_string(status)); }

// A string member of a stored record, or "" when it is absent or not a string.
std::string text_field(const nlohmann::json& record, const char* key) {
  auto it = record.find(key);
  return it != record.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Statuses are decoded here, once: past the store the job model is typed. A row with a status
// this build does not know (a newer controller wrote it) is an error, never a guess.
Result<JobRecord> job_from_row(const Stmt& s) {
  JobRecord j;
  j.id = s.text(0);
  j.seq = s.integer(1);
  auto status = parse_job_status(s.text(2));
  if (!status) return make_error(ErrorKind::internal, "job " + j.id + " has an unknown status '" + s.text(2) + "'");
  j.status = *status;
  j.phase = s.text(3);
  j.server_serial = s.text(4);
  j.server = nlohmann::json::parse(s.text(5), nullptr, false);
  j.recipe = nlohmann::json::parse(s.text(6), nullptr, false);
  j.webhook_key_sealed = s.text(7);
  j.failed_step = s.text(8);
  j.error = s.text(9);
  j.created_ms = s.integer(10);
  j.updated_ms = s.integer(11);
  j.media = nlohmann::json::parse(s.text(12), nullptr, false);
  j.fleet_id = s.text(13);
  j.node_id = s.text(14);
  if (j.server.is_discarded() || j.recipe.is_discarded() || j.media.is_discarded())
    return make_error(ErrorKind::internal, "job " + j.id + " has a stored document that does not parse");
  return j;
}

}  // namespace

// A read connection (SQLite: read-only, in WAL beside the writer; PostgreSQL: a session of
// its own), with its own statement cache: API reads never queue behind the reconciler's writes.
struct ReadConnection {
  std::unique_ptr<SqlConnection> owner;
  SqlConnection* db = nullptr;
  Result<SqlStatement*> prepare(const std::string& sql) { return db->prepare(sql); }
};

struct SqlStore::Impl {
  std::unique_ptr<SqlDatabase> database;
  std::unique_ptr<SqlConnection> writer;
  SqlConnection* db = nullptr;  // the one writer (of this process)
  // Guards db and statements. A thread marked background (mark_store_background_thread)
  // waits while any other thread waits for it: an API call or a webhook never queues behind
  // the reconciler's workers.
  class WriterLock {
   public:
    void lock() {
      std::unique_lock l(m_);
      if (store_background_thread) {
        background_turn_.wait(l, [this] { return !held_ && foreground_waiting_ == 0; });
      } else {
        ++foreground_waiting_;
        foreground_turn_.wait(l, [this] { return !held_; });
        --foreground_waiting_;
      }
      held_ = true;
    }
    void unlock() {
      bool foreground;
      {
        std::lock_guard l(m_);
        held_ = false;
        foreground = foreground_waiting_ > 0;
      }
      if (foreground) foreground_turn_.notify_one();
      else background_turn_.notify_one();
    }

   private:
    std::mutex m_;
    std::condition_variable foreground_turn_, background_turn_;
    bool held_ = false;
    int foreground_waiting_ = 0;
  };
  WriterLock mutex;
  // At most kMaxReaders read connections (each holds three file descriptors and a page
  // cache); a reader beyond that waits for one to come back. Background threads
  // (mark_store_background_thread) hold at most kMaxBackgroundReaders of them and wait while
  // a foreground reader waits: the rest are kept for the API.
  static constexpr std::size_t kMaxReaders = 16;
  static constexpr std::size_t kMaxBackgroundReaders = 12;
  std::mutex readers_mutex;
  std::condition_variable foreground_turn, background_turn;
  std::vector<std::unique_ptr<ReadConnection>> idle_readers;
  std::size_t open_readers = 0;
  std::size_t background_readers = 0;  // lent to background threads now
  int foreground_waiting = 0;

  // Borrows a read connection (opening one when none is idle) and gives it back after use.
  class Reader {
   public:
    Reader(Impl& impl, std::unique_ptr<ReadConnection> c, bool background)
        : impl_(impl), c_(std::move(c)), background_(background) {}
    Reader(Reader&& o) noexcept : impl_(o.impl_), c_(std::move(o.c_)), background_(o.background_) {}
    ~Reader() {
      if (!c_) return;
      {
        std::lock_guard lock(impl_.readers_mutex);
        impl_.idle_readers.push_back(std::move(c_));
        if (background_) --impl_.background_readers;
      }
      impl_.notify_readers();
    }
    ReadConnection* operator->() { return c_.get(); }

   private:
    Impl& impl_;
    std::unique_ptr<ReadConnection> c_;
    bool background_;
  };

  // A connection came back (or a slot to open one): a waiting foreground reader first.
  void notify_readers() {
    foreground_turn.notify_one();
    background_turn.notify_one();  // it checks that no foreground reader waits
  }

  Result<Reader> reader() {
    const bool background = store_background_thread;
    {
      std::unique_lock lock(readers_mutex);
      auto available = [this] { return !idle_readers.empty() || open_readers < kMaxReaders; };
      if (background) {
        background_turn.wait(lock, [&] {
          return foreground_waiting == 0 && background_readers < kMaxBackgroundReaders && available();
        });
        ++background_readers;
      } else if (!available()) {
        ++foreground_waiting;
        foreground_turn.wait(lock, available);
        if (--foreground_waiting == 0) background_turn.notify_one();  // theirs again, if any is left
      }
      if (!idle_readers.empty()) {
        auto c = std::move(idle_readers.back());
        idle_readers.pop_back();
        return Reader(*this, std::move(c), background);
      }
      ++open_readers;  // ours to open, outside the lock
    }
    auto opened = database->open_reader();
    if (!opened) {
      {
        std::lock_guard lock(readers_mutex);
        --open_readers;
        if (background) --background_readers;
      }
      notify_readers();
      return make_error(ErrorKind::unavailable, "cannot open a read connection: " + opened.error().message);
    }
    auto c = std::make_unique<ReadConnection>();
    c->owner = std::move(*opened);
    c->db = c->owner.get();
    return Reader(*this, std::move(c), background);
  }

  Result<SqlStatement*> prepare(const std::string& sql) { return db->prepare(sql); }
  Status exec(const char* sql) { return db->exec(sql); }

  // Set by a transaction that appended to `events`; the listener runs after its commit.
  bool wrote_events = false;
  std::function<void()> events_committed;

  // Runs `body` inside a writing transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL:
  // serializable), rolling back when it fails. A transaction the database refused because it
  // raced another controller's is run again, a few times: it saw nothing that was kept.
  template <typename F>
  auto transaction(F&& body) -> decltype(body()) {
    for (int attempt = 1;; ++attempt) {
      if (auto s = exec(database->begin_write()); !s) return s.error();
      wrote_events = false;
      auto result = body();
      bool retry = false;
      if (result) {
        if (auto s = exec("COMMIT"); !s) {
          retry = db->retryable();
          (void)exec(database->rollback());
          wrote_events = false;
          if (!retry || attempt == kTransactionAttempts) return s.error();
        } else {
          if (wrote_events && events_committed) events_committed();
          wrote_events = false;
          return result;
        }
      } else {
        // A failed ROLLBACK leaves the database rolling back on its own; the first error is
        // the one to report.
        retry = db->retryable();
        (void)exec(database->rollback());
        wrote_events = false;
        if (!retry || attempt == kTransactionAttempts) return result;
      }
    }
  }
  static constexpr int kTransactionAttempts = 8;

  // Appends to the event stream (inside the caller's transaction).
  Status append_event(const std::string& topic, const std::string& kind, const std::string& name,
                      const std::string& from, const std::string& detail, const std::string& job_id,
                      const std::string& fleet_id, const std::string& node_id, const std::string& serial,
                      std::int64_t at_ms) {
    auto st = prepare(
        "INSERT INTO events (topic, kind, name, from_value, detail, job_id, fleet_id, node_id, serial, at_ms) "
        "VALUES (?,?,?,?,?,?,?,?,?,?)");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, topic).bind(2, kind).bind(3, name).bind(4, from).bind(5, detail).bind(6, job_id).bind(7, fleet_id);
    s.bind(8, node_id).bind(9, serial).bind(10, at_ms);
    if (s.step() != Step::done) return db_error(db, "append event");
    wrote_events = true;
    return Ok{};
  }

  Result<bool> insert_event(const std::string& id, const std::string& kind, const std::string& name,
                            const std::string& from, const std::string& detail, std::int64_t now) {
    auto st = prepare("INSERT INTO job_events (job_id, kind, name, from_status, detail, at_ms) VALUES (?,?,?,?,?,?)");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, id).bind(2, kind).bind(3, name).bind(4, from).bind(5, detail).bind(6, now);
    if (s.step() != Step::done) return db_error(db, "insert event");
    // The same change on the event stream, with what its filters select by.
    auto ev = prepare(
        "INSERT INTO events (topic, kind, name, from_value, detail, job_id, fleet_id, node_id, serial, at_ms) "
        "SELECT 'job', ?, ?, ?, ?, id, fleet_id, node_id, server_serial, ? FROM jobs WHERE id = ?");
    if (!ev) return ev.error();
    Stmt e(*ev);
    e.bind(1, kind).bind(2, name).bind(3, from).bind(4, detail).bind(5, now).bind(6, id);
    if (e.step() != Step::done) return db_error(db, "append job event");
    wrote_events = true;
    return true;
  }

  Status insert_job_row(const JobRecord& j) {
    auto st = prepare(
        "INSERT INTO jobs (id, status, phase, server_serial, server_json, recipe_json, webhook_key_sealed, "
        "failed_step, error, created_ms, updated_ms, fleet_id, node_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, j.id).bind(2, status_text(j.status)).bind(3, j.phase).bind(4, j.server_serial).bind(5, j.server.dump());
    s.bind(6, j.recipe.dump()).bind(7, j.webhook_key_sealed).bind(8, j.failed_step).bind(9, j.error);
    s.bind(10, j.created_ms).bind(11, j.updated_ms).bind(12, j.fleet_id).bind(13, j.node_id);
    Step rc = s.step();
    if (rc == Step::constraint) return make_error(ErrorKind::conflict, "job " + j.id + " already exists");
    if (rc != Step::done) return db_error(db, "insert job");
    auto ev = insert_event(j.id, "transition", status_text(j.status), "", "created", j.created_ms);
    if (!ev) return ev.error();
    return Ok{};
  }
};

SqlStore::SqlStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  impl_->events_committed = [this] { events_written(); };
}
SqlStore::~SqlStore() = default;

Result<std::unique_ptr<SqlStore>> SqlStore::open(const std::filesystem::path& file) {
  return open(sqlite_database(file.string()));
}

Result<std::unique_ptr<SqlStore>> SqlStore::open(std::unique_ptr<SqlDatabase> database) {
  auto impl = std::make_unique<Impl>();
  impl->database = std::move(database);
  auto writer = impl->database->open_writer();
  if (!writer) return writer.error();
  impl->writer = std::move(*writer);
  impl->db = impl->writer.get();
  const std::string file = impl->database->describe();

  auto current = impl->database->schema_version(*impl->db);
  if (!current) return current.error();
  const int version = *current;
  if (version > static_cast<int>(kMigrations.size()))
    return make_error(ErrorKind::unavailable, "database " + file + " is from a newer controller (schema " +
                                                  std::to_string(version) + ")");
  for (int i = version; i < static_cast<int>(kMigrations.size()); ++i) {
    auto applied = impl->transaction([&]() -> Status {
      if (auto s = impl->db->exec(impl->database->dialect(kMigrations[i])); !s) return s;
      return impl->database->set_schema_version(*impl->db, i + 1);
    });
    if (!applied) return applied.error();
  }
  if (version < 4) {
    // Migration 4 added jobs.node_id (the event stream's ?node= filter) empty: the jobs an older
    // controller left unfinished get theirs from their server snapshot, once.
    auto filled = impl->transaction([&]() -> Status {
      std::vector<std::pair<std::string, std::string>> rows;
      {
        auto st = impl->prepare("SELECT id, server_json FROM jobs WHERE status NOT IN ('complete', 'canceled')");
        if (!st) return st.error();
        Stmt q(*st);
        while (q.step() == Step::row) {
          auto server = nlohmann::json::parse(q.text(1), nullptr, false);
          if (server.is_object() && server.contains("node_id") && server["node_id"].is_string())
            rows.emplace_back(q.text(0), server["node_id"].get<std::string>());
        }
      }
      for (const auto& [id, node] : rows) {
        auto st = impl->prepare("UPDATE jobs SET node_id = ? WHERE id = ?");
        if (!st) return st.error();
        Stmt u(*st);
        u.bind(1, node).bind(2, id);
        if (u.step() != Step::done) return db_error(impl->db, "backfill node_id");
      }
      return Ok{};
    });
    if (!filled) return filled.error();
  }
  if (auto done = impl->database->migrations_done(*impl->db); !done) return done.error();
  return std::unique_ptr<SqlStore>(new SqlStore(std::move(impl)));
}

std::string SqlStore::describe() const { return impl_->database->describe(); }

int SqlStore::schema_version() {
  std::lock_guard lock(impl_->mutex);
  auto version = impl_->database->schema_version(*impl_->db);
  return version ? *version : -1;
}

Status SqlStore::insert_job(const JobRecord& j) {
  std::lock_guard lock(impl_->mutex);
  return impl_->transaction([&]() -> Status { return impl_->insert_job_row(j); });
}

Result<std::optional<JobRecord>> SqlStore::get_job(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(std::string("SELECT ") + kJobColumns + " FROM jobs WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  Step rc = s.step();
  if (rc == Step::row) {
    auto job = job_from_row(s);
    if (!job) return job.error();
    return std::optional<JobRecord>(std::move(*job));
  }
  if (rc == Step::done) return std::optional<JobRecord>();
  return db_error((*reader)->db, "get job");
}

Result<std::vector<JobRecord>> SqlStore::list_jobs(const JobFilter& f) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  // Fixed SQL text per filter shape keeps the statement cache small and the SQL portable.
  std::string sql = std::string("SELECT ") + kJobColumns + " FROM jobs WHERE seq < ?";
  if (f.status) sql += " AND status = ?";
  if (f.server_serial) sql += " AND server_serial = ?";
  sql += " ORDER BY seq DESC LIMIT ?";
  auto st = (*reader)->prepare(sql);
  if (!st) return st.error();
  Stmt s(*st);
  int i = 1;
  s.bind(i++, f.before_seq.value_or(INT64_MAX));
  if (f.status) s.bind(i++, status_text(*f.status));
  if (f.server_serial) s.bind(i++, *f.server_serial);
  s.bind(i++, static_cast<std::int64_t>(f.limit));
  std::vector<JobRecord> out;
  Step rc;
  while ((rc = s.step()) == Step::row) {
    auto job = job_from_row(s);
    if (!job) return job.error();
    out.push_back(std::move(*job));
  }
  if (rc != Step::done) return db_error((*reader)->db, "list jobs");
  return out;
}

Result<bool> SqlStore::transition_job(const std::string& id, JobStatus expected_status, JobStatus next_status,
                                         const JobChanges& changes, const std::string& detail, std::int64_t now_ms) {
  const std::string expected = status_text(expected_status), next = status_text(next_status);
  std::lock_guard lock(impl_->mutex);
  return impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare(
        "UPDATE jobs SET status = ?, updated_ms = ?, failed_step = COALESCE(?, failed_step), "
        "error = COALESCE(?, error) WHERE id = ? AND status = ?");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, next).bind(2, now_ms);
    if (changes.failed_step) s.bind(3, *changes.failed_step);
    if (changes.error) s.bind(4, *changes.error);
    s.bind(5, id).bind(6, expected);
    if (s.step() != Step::done) return db_error(impl_->db, "transition job");
    if (impl_->db->changes() == 0) return false;
    {
      // A fleet is counted from its member rows: the job's status, and its outcome (the last
      // succeeded/failed/canceled), are kept there in the same transaction.
      const bool outcome = next_status == JobStatus::succeeded || next_status == JobStatus::failed ||
                           next_status == JobStatus::canceled;
      auto o = impl_->prepare(
          "UPDATE fleet_members SET job_status = ?, outcome = CASE WHEN ? = 1 THEN ? ELSE outcome END WHERE job_id = ?");
      if (!o) return o.error();
      Stmt u(*o);
      u.bind(1, next).bind(2, static_cast<std::int64_t>(outcome)).bind(3, next).bind(4, id);
      if (u.step() != Step::done) return db_error(impl_->db, "fleet member status");
    }
    return impl_->insert_event(id, "transition", next, expected, detail, now_ms);
  });
}

Result<bool> SqlStore::record_phase(const std::string& id, const std::string& phase, const std::string& detail,
                                       std::int64_t now_ms) {
  return record_phase_when(id, phase, std::nullopt, detail, now_ms);
}

Result<bool> SqlStore::record_phase_if_status(const std::string& id, const std::string& phase,
                                                 JobStatus expected_status, const std::string& detail,
                                                 std::int64_t now_ms) {
  return record_phase_when(id, phase, status_text(expected_status), detail, now_ms);
}

Result<bool> SqlStore::update_job_recipe(const std::string& id, const nlohmann::json& recipe, std::int64_t now_ms) {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare("UPDATE jobs SET recipe_json = ?, updated_ms = ? WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, recipe.dump()).bind(2, now_ms).bind(3, id);
  if (s.step() != Step::done) return db_error(impl_->db, "update recipe");
  return impl_->db->changes() == 1;
}

Status SqlStore::flush_rewrites() {
  std::lock_guard lock(impl_->mutex);
  return impl_->database->flush_rewrites(*impl_->db);
}

Result<bool> SqlStore::withdraw_phase(const std::string& id, const std::string& phase, const std::string& detail,
                                         std::int64_t now_ms) {
  std::lock_guard lock(impl_->mutex);
  return impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare("DELETE FROM job_phases WHERE job_id = ? AND phase = ?");
    if (!st) return st.error();
    {
      Stmt s(*st);
      s.bind(1, id).bind(2, phase);
      if (s.step() != Step::done) return db_error(impl_->db, "withdraw phase");
    }
    if (impl_->db->changes() == 0) return false;
    // The job's current phase is its latest remaining one.
    auto up = impl_->prepare(
        "UPDATE jobs SET updated_ms = ?, phase = COALESCE((SELECT phase FROM job_phases WHERE job_id = ? "
        "ORDER BY at_ms DESC LIMIT 1), '') WHERE id = ?");
    if (!up) return up.error();
    {
      Stmt u(*up);
      u.bind(1, now_ms).bind(2, id).bind(3, id);
      if (u.step() != Step::done) return db_error(impl_->db, "update phase");
    }
    return impl_->insert_event(id, "phase_withdrawn", phase, "", detail, now_ms);
  });
}

Result<bool> SqlStore::record_phase_when(const std::string& id, const std::string& phase,
                                            const std::optional<std::string>& expected_status,
                                            const std::string& detail, std::int64_t now_ms) {
  std::lock_guard lock(impl_->mutex);
  return impl_->transaction([&]() -> Result<bool> {
    // One statement checks the status and inserts, so nothing can slip in between (portable
    // SQL: INSERT … SELECT … WHERE EXISTS works the same on PostgreSQL).
    auto st = impl_->prepare(
        "INSERT INTO job_phases (job_id, phase, at_ms) SELECT ?,?,? "
        "WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ? AND (? IS NULL OR status = ?)) ON CONFLICT DO NOTHING");
    if (!st) return st.error();
    {
      Stmt s(*st);
      s.bind(1, id).bind(2, phase).bind(3, now_ms).bind(4, id);
      if (expected_status) s.bind(5, *expected_status).bind(6, *expected_status);
      if (s.step() != Step::done) return db_error(impl_->db, "record phase");
    }
    if (impl_->db->changes() == 0) return false;
    auto up = impl_->prepare("UPDATE jobs SET phase = ?, updated_ms = ? WHERE id = ?");
    if (!up) return up.error();
    Stmt u(*up);
    u.bind(1, phase).bind(2, now_ms).bind(3, id);
    if (u.step() != Step::done) return db_error(impl_->db, "update phase");
    return impl_->insert_event(id, "phase", phase, "", detail, now_ms);
  });
}

Result<std::vector<JobEvent>> SqlStore::job_events(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(
      "SELECT seq, kind, name, from_status, detail, at_ms FROM job_events WHERE job_id = ? ORDER BY seq");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  std::vector<JobEvent> out;
  Step rc;
  while ((rc = s.step()) == Step::row)
    out.push_back(JobEvent{s.integer(0), s.text(1), s.text(2), s.text(3), s.text(4), s.integer(5)});
  if (rc != Step::done) return db_error((*reader)->db, "job events");
  return out;
}

Result<bool> SqlStore::set_job_media(const std::string& id, JobStatus expected_status,
                                        const nlohmann::json& media, std::int64_t now_ms) {
  if (!media.is_object()) return make_error(ErrorKind::invalid_input, "a job's media must be a JSON object");
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare("UPDATE jobs SET media_json = ?, updated_ms = ? WHERE id = ? AND status = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, media.dump()).bind(2, now_ms).bind(3, id).bind(4, status_text(expected_status));
  if (s.step() != Step::done) return db_error(impl_->db, "set job media");
  return impl_->db->changes() == 1;
}

Result<std::vector<std::string>> SqlStore::job_ids_to_reconcile(int limit) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(std::string("SELECT id") +
                           " FROM jobs WHERE status NOT IN ('complete', 'canceled') OR "
                           "(status = 'canceled' AND NOT EXISTS (SELECT 1 FROM job_phases p WHERE p.job_id = jobs.id "
                           "AND p.phase = 'cleanup_done')) ORDER BY seq LIMIT ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, static_cast<std::int64_t>(limit));
  std::vector<std::string> out;
  Step rc;
  while ((rc = s.step()) == Step::row) out.push_back(s.text(0));
  if (rc != Step::done) return db_error((*reader)->db, "list jobs to reconcile");
  return out;
}

Result<std::vector<nlohmann::json>> SqlStore::media_in_use() {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare("SELECT media_json FROM jobs WHERE status NOT IN ('complete', 'canceled')");
  if (!st) return st.error();
  Stmt s(*st);
  std::vector<nlohmann::json> out;
  Step rc;
  while ((rc = s.step()) == Step::row) {
    auto media = nlohmann::json::parse(s.text(0), nullptr, false);
    if (media.is_discarded()) return make_error(ErrorKind::internal, "a job's stored media do not parse");
    out.push_back(std::move(media));
  }
  if (rc != Step::done) return db_error((*reader)->db, "media in use");
  return out;
}

Result<bool> SqlStore::remember_webhook(const std::string& signature, std::int64_t now_ms, std::int64_t expires_ms) {
  std::lock_guard lock(impl_->mutex);
  return impl_->transaction([&]() -> Result<bool> {
    auto prune = impl_->prepare("DELETE FROM webhook_signatures WHERE expires_ms < ?");
    if (!prune) return prune.error();
    {
      Stmt p(*prune);
      p.bind(1, now_ms);
      if (p.step() != Step::done) return db_error(impl_->db, "prune signatures");
    }
    auto st = impl_->prepare("INSERT INTO webhook_signatures (signature, expires_ms) VALUES (?,?) ON CONFLICT DO NOTHING");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, signature).bind(2, expires_ms);
    if (s.step() != Step::done) return db_error(impl_->db, "remember signature");
    return impl_->db->changes() == 1;
  });
}

Result<std::map<std::string, std::int64_t>> SqlStore::count_jobs_by_status() {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare("SELECT status, COUNT(*) FROM jobs GROUP BY status");
  if (!st) return st.error();
  Stmt s(*st);
  std::map<std::string, std::int64_t> out;
  Step rc;
  while ((rc = s.step()) == Step::row) out[s.text(0)] = s.integer(1);
  if (rc != Step::done) return db_error((*reader)->db, "count jobs");
  return out;
}

namespace {
Result<ServerRecord> server_from_row(const Stmt& s) {
  ServerRecord r{s.text(0), s.text(1), nlohmann::json::parse(s.text(2), nullptr, false), s.integer(3), s.integer(4)};
  if (!r.record.is_object()) return make_error(ErrorKind::internal, "server " + r.id + " has a stored record that does not parse");
  return r;
}
}  // namespace

Status SqlStore::insert_server(const ServerRecord& r) {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare("INSERT INTO servers (id, serial, record_json, created_ms, updated_ms) VALUES (?,?,?,?,?)");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, r.id).bind(2, r.serial).bind(3, r.record.dump()).bind(4, r.created_ms).bind(5, r.updated_ms);
  Step rc = s.step();
  if (rc == Step::constraint) return make_error(ErrorKind::conflict, "a server with serial " + r.serial + " exists");
  if (rc != Step::done) return db_error(impl_->db, "insert server");
  return Ok{};
}

Result<std::optional<ServerRecord>> SqlStore::get_server(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare("SELECT id, serial, record_json, created_ms, updated_ms FROM servers WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  Step rc = s.step();
  if (rc == Step::row) {
    auto r = server_from_row(s);
    if (!r) return r.error();
    return std::optional<ServerRecord>(std::move(*r));
  }
  if (rc == Step::done) return std::optional<ServerRecord>();
  return db_error((*reader)->db, "get server");
}

Result<std::vector<ServerRecord>> SqlStore::list_servers(const std::optional<std::string>& after_id, int limit) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(
      "SELECT id, serial, record_json, created_ms, updated_ms FROM servers WHERE id > ? ORDER BY id LIMIT ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, after_id.value_or("")).bind(2, static_cast<std::int64_t>(limit));
  std::vector<ServerRecord> out;
  Step rc;
  while ((rc = s.step()) == Step::row) {
    auto r = server_from_row(s);
    if (!r) return r.error();
    out.push_back(std::move(*r));
  }
  if (rc != Step::done) return db_error((*reader)->db, "list servers");
  return out;
}

Result<bool> SqlStore::update_server(const ServerRecord& r, std::int64_t expected_updated_ms) {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare(
      "UPDATE servers SET serial = ?, record_json = ?, updated_ms = ? WHERE id = ? AND updated_ms = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, r.serial).bind(2, r.record.dump()).bind(3, r.updated_ms).bind(4, r.id).bind(5, expected_updated_ms);
  Step rc = s.step();
  if (rc == Step::constraint) return make_error(ErrorKind::conflict, "a server with serial " + r.serial + " exists");
  if (rc != Step::done) return db_error(impl_->db, "update server");
  return impl_->db->changes() == 1;
}

Result<bool> SqlStore::delete_server(const std::string& id) {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare("DELETE FROM servers WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  if (s.step() != Step::done) return db_error(impl_->db, "delete server");
  return impl_->db->changes() == 1;
}

Result<std::int64_t> SqlStore::count_unfinished_jobs(const std::string& serial) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(
      "SELECT COUNT(*) FROM jobs WHERE server_serial = ? AND status NOT IN ('complete', 'canceled')");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, serial);
  if (s.step() != Step::row) return db_error((*reader)->db, "count jobs");
  return s.integer(0);
}

Result<std::optional<std::string>> SqlStore::get_setting(const std::string& key) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare("SELECT value FROM settings WHERE key = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, key);
  Step rc = s.step();
  if (rc == Step::row) return std::optional<std::string>(s.text(0));
  if (rc == Step::done) return std::optional<std::string>();
  return db_error((*reader)->db, "get setting");
}

Status SqlStore::set_setting(const std::string& key, const std::string& value) {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare(
      "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, key).bind(2, value);
  if (s.step() != Step::done) return db_error(impl_->db, "set setting");
  return Ok{};
}

// --- nodes ---

namespace {

constexpr const char* kNodeColumns = "id, state, record_json, created_ms, updated_ms";

Result<NodeRecord> node_from_row(const Stmt& s) {
  NodeRecord n;
  n.id = s.text(0);
  auto state = parse_node_state(s.text(1));
  if (!state) return make_error(ErrorKind::internal, "node " + n.id + " has an unknown state '" + s.text(1) + "'");
  n.state = *state;
  n.record = nlohmann::json::parse(s.text(2), nullptr, false);
  if (!n.record.is_object()) return make_error(ErrorKind::internal, "node " + n.id + " has a stored record that does not parse");
  n.created_ms = s.integer(3);
  n.updated_ms = s.integer(4);
  return n;
}

}  // namespace

// Replaces a node's identity keys; a key another node holds is a conflict (the caller's
// transaction rolls back).
static Status replace_node_keys(SqlConnection* db, const std::function<Result<SqlStatement*>(const std::string&)>& prepare,
                                const NodeRecord& n) {
  {
    auto st = prepare("DELETE FROM node_keys WHERE node_id = ?");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, n.id);
    if (s.step() != Step::done) return db_error(db, "replace node keys");
  }
  for (const auto& key : node_identity_keys(n.record)) {
    auto st = prepare("INSERT INTO node_keys (key, node_id) VALUES (?, ?)");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, key).bind(2, n.id);
    Step rc = s.step();
    if (rc == Step::constraint) return make_error(ErrorKind::conflict, "another node has " + key);
    if (rc != Step::done) return db_error(db, "insert node key");
  }
  return Ok{};
}

namespace {
Result<bool> insert_node_event(SqlConnection* db, const std::function<Result<SqlStatement*>(const std::string&)>& prepare,
                               const std::string& id, const std::string& from, const std::string& to,
                               const std::string& actor, const std::string& detail, std::int64_t at_ms) {
  auto st = prepare("INSERT INTO node_events (node_id, from_state, to_state, actor, detail, at_ms) VALUES (?,?,?,?,?,?)");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id).bind(2, from).bind(3, to).bind(4, actor).bind(5, detail).bind(6, at_ms);
  if (s.step() != Step::done) return db_error(db, "insert node event");
  return true;
}
}  // namespace

Status SqlStore::insert_node(const NodeRecord& n, const std::string& actor, const std::string& detail) {
  std::lock_guard lock(impl_->mutex);
  auto prepare = [this](const std::string& sql) { return impl_->prepare(sql); };
  auto done = impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare("INSERT INTO nodes (id, state, record_json, created_ms, updated_ms) VALUES (?,?,?,?,?)");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, n.id).bind(2, std::string(to_string(n.state))).bind(3, n.record.dump()).bind(4, n.created_ms).bind(5, n.updated_ms);
    Step rc = s.step();
    if (rc == Step::constraint) return make_error(ErrorKind::conflict, "a node " + n.id + " exists");
    if (rc != Step::done) return db_error(impl_->db, "insert node");
    if (auto k = replace_node_keys(impl_->db, prepare, n); !k) return k.error();
    if (auto e = insert_node_event(impl_->db, prepare, n.id, "", std::string(to_string(n.state)), actor, detail,
                                   n.created_ms);
        !e)
      return e.error();
    if (auto e = impl_->append_event("node", "created", std::string(to_string(n.state)), "", detail,
                                     text_field(n.record, "job_id"), "", n.id, text_field(n.record, "serial"),
                                     n.created_ms);
        !e)
      return e.error();
    return true;
  });
  if (!done) return done.error();
  return Ok{};
}

Result<std::optional<NodeRecord>> SqlStore::get_node(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(std::string("SELECT ") + kNodeColumns + " FROM nodes WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  Step rc = s.step();
  if (rc == Step::row) {
    auto n = node_from_row(s);
    if (!n) return n.error();
    return std::optional<NodeRecord>(std::move(*n));
  }
  if (rc == Step::done) return std::optional<NodeRecord>();
  return db_error((*reader)->db, "get node");
}

Result<std::optional<NodeRecord>> SqlStore::find_node(const std::string& key) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(
      "SELECT n.id, n.state, n.record_json, n.created_ms, n.updated_ms FROM node_keys k JOIN nodes n ON n.id = k.node_id "
      "WHERE k.key = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, key);
  Step rc = s.step();
  if (rc == Step::row) {
    auto n = node_from_row(s);
    if (!n) return n.error();
    return std::optional<NodeRecord>(std::move(*n));
  }
  if (rc == Step::done) return std::optional<NodeRecord>();
  return db_error((*reader)->db, "find node");
}

Result<std::vector<NodeRecord>> SqlStore::list_nodes(const std::optional<std::string>& after_id, int limit) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(std::string("SELECT ") + kNodeColumns + " FROM nodes WHERE id > ? ORDER BY id LIMIT ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, after_id.value_or("")).bind(2, static_cast<std::int64_t>(limit));
  std::vector<NodeRecord> out;
  Step rc;
  while ((rc = s.step()) == Step::row) {
    auto n = node_from_row(s);
    if (!n) return n.error();
    out.push_back(std::move(*n));
  }
  if (rc != Step::done) return db_error((*reader)->db, "list nodes");
  return out;
}

Result<bool> SqlStore::update_node(const NodeRecord& n, std::int64_t expected_updated_ms) {
  std::lock_guard lock(impl_->mutex);
  auto prepare = [this](const std::string& sql) { return impl_->prepare(sql); };
  return impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare("UPDATE nodes SET record_json = ?, updated_ms = ? WHERE id = ? AND updated_ms = ?");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, n.record.dump()).bind(2, n.updated_ms).bind(3, n.id).bind(4, expected_updated_ms);
    if (s.step() != Step::done) return db_error(impl_->db, "update node");
    if (impl_->db->changes() == 0) return false;
    if (auto k = replace_node_keys(impl_->db, prepare, n); !k) return k.error();
    return true;
  });
}

Result<bool> SqlStore::transition_node(const NodeRecord& n, NodeState expected, std::int64_t expected_updated_ms,
                                          const std::string& actor, const std::string& detail) {
  std::lock_guard lock(impl_->mutex);
  auto prepare = [this](const std::string& sql) { return impl_->prepare(sql); };
  const std::string from(to_string(expected)), to(to_string(n.state));
  return impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare(
        "UPDATE nodes SET state = ?, record_json = ?, updated_ms = ? WHERE id = ? AND state = ? AND updated_ms = ?");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, to).bind(2, n.record.dump()).bind(3, n.updated_ms).bind(4, n.id).bind(5, from).bind(6, expected_updated_ms);
    if (s.step() != Step::done) return db_error(impl_->db, "transition node");
    if (impl_->db->changes() == 0) return false;
    if (auto k = replace_node_keys(impl_->db, prepare, n); !k) return k.error();
    if (auto e = insert_node_event(impl_->db, prepare, n.id, from, to, actor, detail, n.updated_ms); !e) return e.error();
    if (auto e = impl_->append_event("node", "transition", to, from, detail, text_field(n.record, "job_id"), "", n.id,
                                     text_field(n.record, "serial"), n.updated_ms);
        !e)
      return e.error();
    return true;
  });
}

Result<std::vector<NodeEvent>> SqlStore::node_events(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(
      "SELECT seq, from_state, to_state, actor, detail, at_ms FROM node_events WHERE node_id = ? ORDER BY seq");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  std::vector<NodeEvent> out;
  Step rc;
  while ((rc = s.step()) == Step::row)
    out.push_back(NodeEvent{s.integer(0), s.text(1), s.text(2), s.text(3), s.text(4), s.integer(5)});
  if (rc != Step::done) return db_error((*reader)->db, "node events");
  return out;
}

Result<bool> SqlStore::delete_node(const std::string& id) {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare("DELETE FROM nodes WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  if (s.step() != Step::done) return db_error(impl_->db, "delete node");
  return impl_->db->changes() == 1;
}

// --- fleets ---

namespace {

constexpr const char* kFleetColumns = "id, seq, status, spec_json, reason, created_ms, updated_ms";

Result<FleetRecord> fleet_from_row(const Stmt& s) {
  FleetRecord f;
  f.id = s.text(0);
  f.seq = s.integer(1);
  auto status = parse_fleet_status(s.text(2));
  if (!status) return make_error(ErrorKind::internal, "fleet " + f.id + " has an unknown status '" + s.text(2) + "'");
  f.status = *status;
  f.spec = nlohmann::json::parse(s.text(3), nullptr, false);
  if (!f.spec.is_object()) return make_error(ErrorKind::internal, "fleet " + f.id + " has a stored spec that does not parse");
  f.reason = s.text(4);
  f.created_ms = s.integer(5);
  f.updated_ms = s.integer(6);
  return f;
}

std::string fleet_status_text(FleetStatus s) { return std::string(to_string(s)); }

}  // namespace

Status SqlStore::insert_fleet(const FleetRecord& f, const std::vector<FleetMember>& members) {
  std::lock_guard lock(impl_->mutex);
  auto done = impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare(
        "INSERT INTO fleets (id, status, spec_json, reason, created_ms, updated_ms) VALUES (?,?,?,?,?,?)");
    if (!st) return st.error();
    {
      Stmt s(*st);
      s.bind(1, f.id).bind(2, fleet_status_text(f.status)).bind(3, f.spec.dump()).bind(4, f.reason);
      s.bind(5, f.created_ms).bind(6, f.updated_ms);
      Step rc = s.step();
      if (rc == Step::constraint) return make_error(ErrorKind::conflict, "fleet " + f.id + " already exists");
      if (rc != Step::done) return db_error(impl_->db, "insert fleet");
    }
    for (const auto& m : members) {
      auto ms = impl_->prepare("INSERT INTO fleet_members (fleet_id, position, server_id, serial) VALUES (?,?,?,?)");
      if (!ms) return ms.error();
      Stmt s(*ms);
      s.bind(1, f.id).bind(2, static_cast<std::int64_t>(m.position)).bind(3, m.server_id).bind(4, m.serial);
      if (s.step() != Step::done) return db_error(impl_->db, "insert fleet member");
    }
    if (auto e = impl_->append_event("fleet", "created", fleet_status_text(f.status), "",
                                     std::to_string(members.size()) + " servers", "", f.id, "", "", f.created_ms);
        !e)
      return e.error();
    return true;
  });
  if (!done) return done.error();
  return Ok{};
}

Result<std::optional<FleetRecord>> SqlStore::get_fleet(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(std::string("SELECT ") + kFleetColumns + " FROM fleets WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  Step rc = s.step();
  if (rc == Step::row) {
    auto f = fleet_from_row(s);
    if (!f) return f.error();
    return std::optional<FleetRecord>(std::move(*f));
  }
  if (rc == Step::done) return std::optional<FleetRecord>();
  return db_error((*reader)->db, "get fleet");
}

Result<std::vector<FleetRecord>> SqlStore::list_fleets(const FleetFilter& f) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  std::string sql = std::string("SELECT ") + kFleetColumns + " FROM fleets WHERE seq < ?";
  if (f.status) sql += " AND status = ?";
  sql += " ORDER BY seq DESC LIMIT ?";
  auto st = (*reader)->prepare(sql);
  if (!st) return st.error();
  Stmt s(*st);
  int i = 1;
  s.bind(i++, f.before_seq.value_or(INT64_MAX));
  if (f.status) s.bind(i++, fleet_status_text(*f.status));
  s.bind(i++, static_cast<std::int64_t>(f.limit));
  std::vector<FleetRecord> out;
  Step rc;
  while ((rc = s.step()) == Step::row) {
    auto fleet = fleet_from_row(s);
    if (!fleet) return fleet.error();
    out.push_back(std::move(*fleet));
  }
  if (rc != Step::done) return db_error((*reader)->db, "list fleets");
  return out;
}

Result<std::vector<std::string>> SqlStore::active_fleet_ids() {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare("SELECT id FROM fleets WHERE status IN ('running', 'paused') ORDER BY seq");
  if (!st) return st.error();
  Stmt s(*st);
  std::vector<std::string> out;
  Step rc;
  while ((rc = s.step()) == Step::row) out.push_back(s.text(0));
  if (rc != Step::done) return db_error((*reader)->db, "active fleets");
  return out;
}

Result<bool> SqlStore::transition_fleet(const std::string& id, FleetStatus expected, FleetStatus next,
                                           const std::string& reason, std::int64_t now_ms) {
  const std::string from = fleet_status_text(expected), to = fleet_status_text(next);
  std::lock_guard lock(impl_->mutex);
  return impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare(
        "UPDATE fleets SET status = ?, reason = CASE WHEN ? = '' THEN reason ELSE ? END, updated_ms = ? "
        "WHERE id = ? AND status = ?");
    if (!st) return st.error();
    {
      Stmt s(*st);
      s.bind(1, to).bind(2, reason).bind(3, reason).bind(4, now_ms).bind(5, id).bind(6, from);
      if (s.step() != Step::done) return db_error(impl_->db, "transition fleet");
    }
    if (impl_->db->changes() == 0) return false;
    if (auto e = impl_->append_event("fleet", "transition", to, from, reason, "", id, "", "", now_ms); !e)
      return e.error();
    return true;
  });
}

Result<bool> SqlStore::set_fleet_reason(const std::string& id, const std::string& reason, std::int64_t now_ms) {
  std::lock_guard lock(impl_->mutex);
  return impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare("UPDATE fleets SET reason = ?, updated_ms = ? WHERE id = ? AND reason = ''");
    if (!st) return st.error();
    {
      Stmt s(*st);
      s.bind(1, reason).bind(2, now_ms).bind(3, id);
      if (s.step() != Step::done) return db_error(impl_->db, "set fleet reason");
    }
    if (impl_->db->changes() == 0) return false;
    if (auto e = impl_->append_event("fleet", "stopped_launching", "", "", reason, "", id, "", "", now_ms); !e)
      return e.error();
    return true;
  });
}

Result<std::vector<FleetMember>> SqlStore::fleet_members(const std::string& id, const FleetMemberQuery& q) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  // The outcome is the job's last succeeded/failed/canceled transition (transition_job keeps it).
  std::string sql =
      "SELECT m.position, m.server_id, m.serial, m.job_id, COALESCE(j.status, ''), COALESCE(j.phase, ''), "
      "m.outcome, COALESCE(j.failed_step, ''), COALESCE(j.error, '') "
      "FROM fleet_members m LEFT JOIN jobs j ON j.id = m.job_id WHERE m.fleet_id = ? AND m.position < ?";
  if (q.unlaunched_only) sql += " AND m.job_id = ''";
  if (q.failed_only) sql += " AND m.outcome IN ('failed', 'canceled')";
  sql += " ORDER BY m.position LIMIT ?";  // no bound: the largest (PostgreSQL has no LIMIT -1)
  auto st = (*reader)->prepare(sql);
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id).bind(2, static_cast<std::int64_t>(q.below_position)).bind(3, q.limit < 0 ? INT64_MAX : static_cast<std::int64_t>(q.limit));
  std::vector<FleetMember> out;
  Step rc;
  while ((rc = s.step()) == Step::row) {
    FleetMember m;
    m.position = static_cast<int>(s.integer(0));
    m.server_id = s.text(1);
    m.serial = s.text(2);
    m.job_id = s.text(3);
    if (auto status = s.text(4); !status.empty()) {
      m.job_status = parse_job_status(status);
      if (!m.job_status) return make_error(ErrorKind::internal, "job " + m.job_id + " has an unknown status '" + status + "'");
    }
    m.job_phase = s.text(5);
    m.job_outcome = s.text(6);
    m.job_failed_step = s.text(7);
    m.job_error = s.text(8);
    out.push_back(std::move(m));
  }
  if (rc != Step::done) return db_error((*reader)->db, "fleet members");
  return out;
}

Result<std::vector<FleetCountRow>> SqlStore::fleet_counts(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(
      "SELECT CASE WHEN job_id <> '' THEN 1 ELSE 0 END, job_status, outcome, COUNT(*) FROM fleet_members WHERE fleet_id = ? GROUP BY 1, 2, 3");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  std::vector<FleetCountRow> out;
  Step rc;
  while ((rc = s.step()) == Step::row) {
    FleetCountRow row;
    row.launched = s.integer(0) != 0;
    if (auto status = s.text(1); !status.empty()) {
      row.job_status = parse_job_status(status);
      if (!row.job_status) return make_error(ErrorKind::internal, "a job of fleet " + id + " has an unknown status '" + status + "'");
    }
    row.outcome = s.text(2);
    row.count = static_cast<int>(s.integer(3));
    out.push_back(std::move(row));
  }
  if (rc != Step::done) return db_error((*reader)->db, "fleet counts");
  return out;
}

Result<bool> SqlStore::insert_fleet_job(const JobRecord& job, const std::string& fleet_id, int position) {
  std::lock_guard lock(impl_->mutex);
  return impl_->transaction([&]() -> Result<bool> {
    // Claims the member first: only a running fleet's member without a job.
    auto st = impl_->prepare(
        "UPDATE fleet_members SET job_id = ?, job_status = ? WHERE fleet_id = ? AND position = ? AND job_id = '' "
        "AND EXISTS (SELECT 1 FROM fleets WHERE id = ? AND status = 'running' AND reason = '')");
    if (!st) return st.error();
    {
      Stmt s(*st);
      s.bind(1, job.id).bind(2, status_text(job.status)).bind(3, fleet_id).bind(4, static_cast<std::int64_t>(position)).bind(5, fleet_id);
      if (s.step() != Step::done) return db_error(impl_->db, "claim fleet member");
    }
    if (impl_->db->changes() == 0) return false;
    if (auto inserted = impl_->insert_job_row(job); !inserted) return inserted.error();
    return true;
  });
}

Result<std::vector<EventRecord>> SqlStore::events_after(std::int64_t after_seq, const EventFilter& f, int limit) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  std::string sql =
      "SELECT seq, topic, kind, name, from_value, detail, job_id, fleet_id, node_id, serial, at_ms FROM events "
      "WHERE seq > ?";
  if (f.job) sql += " AND job_id = ?";
  if (f.fleet) sql += " AND fleet_id = ?";
  if (f.node) sql += " AND node_id = ?";
  sql += " ORDER BY seq LIMIT ?";
  auto st = (*reader)->prepare(sql);
  if (!st) return st.error();
  Stmt s(*st);
  int i = 1;
  s.bind(i++, after_seq);
  if (f.job) s.bind(i++, *f.job);
  if (f.fleet) s.bind(i++, *f.fleet);
  if (f.node) s.bind(i++, *f.node);
  s.bind(i++, static_cast<std::int64_t>(limit));
  std::vector<EventRecord> out;
  Step rc;
  while ((rc = s.step()) == Step::row)
    out.push_back(EventRecord{s.integer(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5), s.text(6),
                              s.text(7), s.text(8), s.text(9), s.integer(10)});
  if (rc != Step::done) return db_error((*reader)->db, "events");
  return out;
}

Result<std::int64_t> SqlStore::last_event_seq() {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare("SELECT COALESCE(MAX(seq), 0) FROM events");
  if (!st) return st.error();
  Stmt s(*st);
  if (s.step() != Step::row) return db_error((*reader)->db, "last event");
  return s.integer(0);
}

}  // namespace provisioner
