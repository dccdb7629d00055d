#include "controller/store/sqlite_store.hpp"

#include <sqlite3.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "controller/nodes/node_identity.hpp"
#include "controller/store/migrations.hpp"

namespace provisioner {

namespace {

Error db_error(sqlite3* db, const std::string& what) {
  return make_error(ErrorKind::internal, what + ": " + sqlite3_errmsg(db));
}

// A prepared statement, reset on scope exit so the cached one can be reused.
class Stmt {
 public:
  Stmt(sqlite3_stmt* s) : s_(s) {}
  ~Stmt() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int i, std::int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  int step() { return sqlite3_step(s_); }
  std::string text(int col) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col))) : std::string();
  }
  std::int64_t integer(int col) const { return sqlite3_column_int64(s_, col); }

 private:
  sqlite3_stmt* s_;
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

// Statements are prepared once per connection and cached: preparing costs more than running.
Result<sqlite3_stmt*> prepare_cached(sqlite3* db, std::unordered_map<std::string, sqlite3_stmt*>& cache,
                                     const std::string& sql) {
  if (auto it = cache.find(sql); it != cache.end()) return it->second;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) return db_error(db, "prepare");
  cache.emplace(sql, s);
  return s;
}

}  // namespace

// A read-only connection with its own statement cache. WAL lets readers run beside the
// writer, so API reads never queue behind the reconciler's writes.
struct ReadConnection {
  sqlite3* db = nullptr;
  std::unordered_map<std::string, sqlite3_stmt*> statements;
  ~ReadConnection() {
    for (auto& [sql, s] : statements) sqlite3_finalize(s);
    if (db) sqlite3_close(db);
  }
  Result<sqlite3_stmt*> prepare(const std::string& sql) { return prepare_cached(db, statements, sql); }
};

struct SqliteStore::Impl {
  sqlite3* db = nullptr;  // the one writer
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
  std::unordered_map<std::string, sqlite3_stmt*> statements;
  std::filesystem::path file;
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

  ~Impl() {
    for (auto& [sql, s] : statements) sqlite3_finalize(s);
    if (db) sqlite3_close(db);
  }

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
    auto c = std::make_unique<ReadConnection>();
    if (sqlite3_open_v2(file.c_str(), &c->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
      std::string why = c->db ? sqlite3_errmsg(c->db) : "out of memory";
      {
        std::lock_guard lock(readers_mutex);
        --open_readers;
        if (background) --background_readers;
      }
      notify_readers();
      return make_error(ErrorKind::unavailable, "cannot open a read connection: " + why);
    }
    sqlite3_busy_timeout(c->db, 5000);
    return Reader(*this, std::move(c), background);
  }

  Result<sqlite3_stmt*> prepare(const std::string& sql) { return prepare_cached(db, statements, sql); }

  Status exec(const char* sql) {
    char* msg = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
      std::string m = msg ? msg : "unknown";
      sqlite3_free(msg);
      return make_error(ErrorKind::internal, std::string("sqlite: ") + m);
    }
    return Ok{};
  }

  // Set by a transaction that appended to `events`; the listener runs after its commit.
  bool wrote_events = false;
  std::function<void()> events_committed;

  // Runs `body` inside BEGIN IMMEDIATE … COMMIT, rolling back when it fails.
  template <typename F>
  auto transaction(F&& body) -> decltype(body()) {
    if (auto s = exec("BEGIN IMMEDIATE"); !s) return s.error();
    wrote_events = false;
    auto result = body();
    // A failed ROLLBACK leaves SQLite rolling back on its own; the first error is the one to report.
    if (!result) {
      (void)exec("ROLLBACK");
      wrote_events = false;
      return result;
    }
    if (auto s = exec("COMMIT"); !s) {
      (void)exec("ROLLBACK");
      wrote_events = false;
      return s.error();
    }
    if (wrote_events && events_committed) events_committed();
    wrote_events = false;
    return result;
  }

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
    if (s.step() != SQLITE_DONE) return db_error(db, "append event");
    wrote_events = true;
    return Ok{};
  }

  Result<bool> insert_event(const std::string& id, const std::string& kind, const std::string& name,
                            const std::string& from, const std::string& detail, std::int64_t now) {
    auto st = prepare("INSERT INTO job_events (job_id, kind, name, from_status, detail, at_ms) VALUES (?,?,?,?,?,?)");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, id).bind(2, kind).bind(3, name).bind(4, from).bind(5, detail).bind(6, now);
    if (s.step() != SQLITE_DONE) return db_error(db, "insert event");
    // The same change on the event stream, with what its filters select by.
    auto ev = prepare(
        "INSERT INTO events (topic, kind, name, from_value, detail, job_id, fleet_id, node_id, serial, at_ms) "
        "SELECT 'job', ?, ?, ?, ?, id, fleet_id, node_id, server_serial, ? FROM jobs WHERE id = ?");
    if (!ev) return ev.error();
    Stmt e(*ev);
    e.bind(1, kind).bind(2, name).bind(3, from).bind(4, detail).bind(5, now).bind(6, id);
    if (e.step() != SQLITE_DONE) return db_error(db, "append job event");
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
    int rc = s.step();
    if (rc == SQLITE_CONSTRAINT) return make_error(ErrorKind::conflict, "job " + j.id + " already exists");
    if (rc != SQLITE_DONE) return db_error(db, "insert job");
    auto ev = insert_event(j.id, "transition", status_text(j.status), "", "created", j.created_ms);
    if (!ev) return ev.error();
    return Ok{};
  }
};

SqliteStore::SqliteStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
  impl_->events_committed = [this] { events_written(); };
}
SqliteStore::~SqliteStore() = default;

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::filesystem::path& file) {
  auto impl = std::make_unique<Impl>();
  impl->file = file;
  if (sqlite3_open_v2(file.c_str(), &impl->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK)
    return make_error(ErrorKind::unavailable, "cannot open database " + file.string() + ": " +
                                                  (impl->db ? sqlite3_errmsg(impl->db) : "out of memory"));
  sqlite3_busy_timeout(impl->db, 5000);
  // WAL: readers never block the writer; NORMAL sync keeps every commit across a process
  // crash (SIGKILL) and costs no fsync per commit. secure_delete: the bytes of a rewritten or
  // deleted row are zeroed, so a secret sealed in place leaves no clear copy in free space.
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON",
                             "PRAGMA secure_delete=ON"})
    if (auto s = impl->exec(pragma); !s) return s.error();

  int version = 0;
  {
    auto st = impl->prepare("PRAGMA user_version");
    if (!st) return st.error();
    Stmt s(*st);
    if (s.step() == SQLITE_ROW) version = static_cast<int>(s.integer(0));
  }
  if (version > static_cast<int>(kMigrations.size()))
    return make_error(ErrorKind::unavailable, "database " + file.string() + " is from a newer controller (schema " +
                                                  std::to_string(version) + ")");
  for (int i = version; i < static_cast<int>(kMigrations.size()); ++i) {
    auto applied = impl->transaction([&]() -> Status {
      std::string sql(kMigrations[i]);
      sql += "\nPRAGMA user_version = " + std::to_string(i + 1) + ";";
      return impl->exec(sql.c_str());
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
        while (q.step() == SQLITE_ROW) {
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
        if (u.step() != SQLITE_DONE) return db_error(impl->db, "backfill node_id");
      }
      return Ok{};
    });
    if (!filled) return filled.error();
  }
  return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(impl)));
}

int SqliteStore::schema_version() {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare("PRAGMA user_version");
  if (!st) return -1;
  Stmt s(*st);
  return s.step() == SQLITE_ROW ? static_cast<int>(s.integer(0)) : -1;
}

Status SqliteStore::insert_job(const JobRecord& j) {
  std::lock_guard lock(impl_->mutex);
  return impl_->transaction([&]() -> Status { return impl_->insert_job_row(j); });
}

Result<std::optional<JobRecord>> SqliteStore::get_job(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(std::string("SELECT ") + kJobColumns + " FROM jobs WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  int rc = s.step();
  if (rc == SQLITE_ROW) {
    auto job = job_from_row(s);
    if (!job) return job.error();
    return std::optional<JobRecord>(std::move(*job));
  }
  if (rc == SQLITE_DONE) return std::optional<JobRecord>();
  return db_error((*reader)->db, "get job");
}

Result<std::vector<JobRecord>> SqliteStore::list_jobs(const JobFilter& f) {
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
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    auto job = job_from_row(s);
    if (!job) return job.error();
    out.push_back(std::move(*job));
  }
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "list jobs");
  return out;
}

Result<bool> SqliteStore::transition_job(const std::string& id, JobStatus expected_status, JobStatus next_status,
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
    if (s.step() != SQLITE_DONE) return db_error(impl_->db, "transition job");
    if (sqlite3_changes(impl_->db) == 0) return false;
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
      if (u.step() != SQLITE_DONE) return db_error(impl_->db, "fleet member status");
    }
    return impl_->insert_event(id, "transition", next, expected, detail, now_ms);
  });
}

Result<bool> SqliteStore::record_phase(const std::string& id, const std::string& phase, const std::string& detail,
                                       std::int64_t now_ms) {
  return record_phase_when(id, phase, std::nullopt, detail, now_ms);
}

Result<bool> SqliteStore::record_phase_if_status(const std::string& id, const std::string& phase,
                                                 JobStatus expected_status, const std::string& detail,
                                                 std::int64_t now_ms) {
  return record_phase_when(id, phase, status_text(expected_status), detail, now_ms);
}

Result<bool> SqliteStore::update_job_recipe(const std::string& id, const nlohmann::json& recipe, std::int64_t now_ms) {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare("UPDATE jobs SET recipe_json = ?, updated_ms = ? WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, recipe.dump()).bind(2, now_ms).bind(3, id);
  if (s.step() != SQLITE_DONE) return db_error(impl_->db, "update recipe");
  return sqlite3_changes(impl_->db) == 1;
}

Status SqliteStore::flush_rewrites() {
  std::lock_guard lock(impl_->mutex);
  return impl_->exec("PRAGMA wal_checkpoint(TRUNCATE)");
}

Result<bool> SqliteStore::withdraw_phase(const std::string& id, const std::string& phase, const std::string& detail,
                                         std::int64_t now_ms) {
  std::lock_guard lock(impl_->mutex);
  return impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare("DELETE FROM job_phases WHERE job_id = ? AND phase = ?");
    if (!st) return st.error();
    {
      Stmt s(*st);
      s.bind(1, id).bind(2, phase);
      if (s.step() != SQLITE_DONE) return db_error(impl_->db, "withdraw phase");
    }
    if (sqlite3_changes(impl_->db) == 0) return false;
    // The job's current phase is its latest remaining one.
    auto up = impl_->prepare(
        "UPDATE jobs SET updated_ms = ?, phase = COALESCE((SELECT phase FROM job_phases WHERE job_id = ? "
        "ORDER BY at_ms DESC LIMIT 1), '') WHERE id = ?");
    if (!up) return up.error();
    {
      Stmt u(*up);
      u.bind(1, now_ms).bind(2, id).bind(3, id);
      if (u.step() != SQLITE_DONE) return db_error(impl_->db, "update phase");
    }
    return impl_->insert_event(id, "phase_withdrawn", phase, "", detail, now_ms);
  });
}

Result<bool> SqliteStore::record_phase_when(const std::string& id, const std::string& phase,
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
      if (s.step() != SQLITE_DONE) return db_error(impl_->db, "record phase");
    }
    if (sqlite3_changes(impl_->db) == 0) return false;
    auto up = impl_->prepare("UPDATE jobs SET phase = ?, updated_ms = ? WHERE id = ?");
    if (!up) return up.error();
    Stmt u(*up);
    u.bind(1, phase).bind(2, now_ms).bind(3, id);
    if (u.step() != SQLITE_DONE) return db_error(impl_->db, "update phase");
    return impl_->insert_event(id, "phase", phase, "", detail, now_ms);
  });
}

Result<std::vector<JobEvent>> SqliteStore::job_events(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(
      "SELECT seq, kind, name, from_status, detail, at_ms FROM job_events WHERE job_id = ? ORDER BY seq");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  std::vector<JobEvent> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW)
    out.push_back(JobEvent{s.integer(0), s.text(1), s.text(2), s.text(3), s.text(4), s.integer(5)});
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "job events");
  return out;
}

Result<bool> SqliteStore::set_job_media(const std::string& id, JobStatus expected_status,
                                        const nlohmann::json& media, std::int64_t now_ms) {
  if (!media.is_object()) return make_error(ErrorKind::invalid_input, "a job's media must be a JSON object");
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare("UPDATE jobs SET media_json = ?, updated_ms = ? WHERE id = ? AND status = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, media.dump()).bind(2, now_ms).bind(3, id).bind(4, status_text(expected_status));
  if (s.step() != SQLITE_DONE) return db_error(impl_->db, "set job media");
  return sqlite3_changes(impl_->db) == 1;
}

Result<std::vector<std::string>> SqliteStore::job_ids_to_reconcile(int limit) {
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
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) out.push_back(s.text(0));
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "list jobs to reconcile");
  return out;
}

Result<std::vector<nlohmann::json>> SqliteStore::media_in_use() {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare("SELECT media_json FROM jobs WHERE status NOT IN ('complete', 'canceled')");
  if (!st) return st.error();
  Stmt s(*st);
  std::vector<nlohmann::json> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    auto media = nlohmann::json::parse(s.text(0), nullptr, false);
    if (media.is_discarded()) return make_error(ErrorKind::internal, "a job's stored media do not parse");
    out.push_back(std::move(media));
  }
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "media in use");
  return out;
}

Result<bool> SqliteStore::remember_webhook(const std::string& signature, std::int64_t now_ms, std::int64_t expires_ms) {
  std::lock_guard lock(impl_->mutex);
  return impl_->transaction([&]() -> Result<bool> {
    auto prune = impl_->prepare("DELETE FROM webhook_signatures WHERE expires_ms < ?");
    if (!prune) return prune.error();
    {
      Stmt p(*prune);
      p.bind(1, now_ms);
      if (p.step() != SQLITE_DONE) return db_error(impl_->db, "prune signatures");
    }
    auto st = impl_->prepare("INSERT INTO webhook_signatures (signature, expires_ms) VALUES (?,?) ON CONFLICT DO NOTHING");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, signature).bind(2, expires_ms);
    if (s.step() != SQLITE_DONE) return db_error(impl_->db, "remember signature");
    return sqlite3_changes(impl_->db) == 1;
  });
}

Result<std::map<std::string, std::int64_t>> SqliteStore::count_jobs_by_status() {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare("SELECT status, COUNT(*) FROM jobs GROUP BY status");
  if (!st) return st.error();
  Stmt s(*st);
  std::map<std::string, std::int64_t> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) out[s.text(0)] = s.integer(1);
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "count jobs");
  return out;
}

namespace {
Result<ServerRecord> server_from_row(const Stmt& s) {
  ServerRecord r{s.text(0), s.text(1), nlohmann::json::parse(s.text(2), nullptr, false), s.integer(3), s.integer(4)};
  if (!r.record.is_object()) return make_error(ErrorKind::internal, "server " + r.id + " has a stored record that does not parse");
  return r;
}
}  // namespace

Status SqliteStore::insert_server(const ServerRecord& r) {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare("INSERT INTO servers (id, serial, record_json, created_ms, updated_ms) VALUES (?,?,?,?,?)");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, r.id).bind(2, r.serial).bind(3, r.record.dump()).bind(4, r.created_ms).bind(5, r.updated_ms);
  int rc = s.step();
  if (rc == SQLITE_CONSTRAINT) return make_error(ErrorKind::conflict, "a server with serial " + r.serial + " exists");
  if (rc != SQLITE_DONE) return db_error(impl_->db, "insert server");
  return Ok{};
}

Result<std::optional<ServerRecord>> SqliteStore::get_server(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare("SELECT id, serial, record_json, created_ms, updated_ms FROM servers WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  int rc = s.step();
  if (rc == SQLITE_ROW) {
    auto r = server_from_row(s);
    if (!r) return r.error();
    return std::optional<ServerRecord>(std::move(*r));
  }
  if (rc == SQLITE_DONE) return std::optional<ServerRecord>();
  return db_error((*reader)->db, "get server");
}

Result<std::vector<ServerRecord>> SqliteStore::list_servers(const std::optional<std::string>& after_id, int limit) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(
      "SELECT id, serial, record_json, created_ms, updated_ms FROM servers WHERE id > ? ORDER BY id LIMIT ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, after_id.value_or("")).bind(2, static_cast<std::int64_t>(limit));
  std::vector<ServerRecord> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    auto r = server_from_row(s);
    if (!r) return r.error();
    out.push_back(std::move(*r));
  }
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "list servers");
  return out;
}

Result<bool> SqliteStore::update_server(const ServerRecord& r, std::int64_t expected_updated_ms) {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare(
      "UPDATE servers SET serial = ?, record_json = ?, updated_ms = ? WHERE id = ? AND updated_ms = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, r.serial).bind(2, r.record.dump()).bind(3, r.updated_ms).bind(4, r.id).bind(5, expected_updated_ms);
  int rc = s.step();
  if (rc == SQLITE_CONSTRAINT) return make_error(ErrorKind::conflict, "a server with serial " + r.serial + " exists");
  if (rc != SQLITE_DONE) return db_error(impl_->db, "update server");
  return sqlite3_changes(impl_->db) == 1;
}

Result<bool> SqliteStore::delete_server(const std::string& id) {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare("DELETE FROM servers WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  if (s.step() != SQLITE_DONE) return db_error(impl_->db, "delete server");
  return sqlite3_changes(impl_->db) == 1;
}

Result<std::int64_t> SqliteStore::count_unfinished_jobs(const std::string& serial) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(
      "SELECT COUNT(*) FROM jobs WHERE server_serial = ? AND status NOT IN ('complete', 'canceled')");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, serial);
  if (s.step() != SQLITE_ROW) return db_error((*reader)->db, "count jobs");
  return s.integer(0);
}

Result<std::optional<std::string>> SqliteStore::get_setting(const std::string& key) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare("SELECT value FROM settings WHERE key = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, key);
  int rc = s.step();
  if (rc == SQLITE_ROW) return std::optional<std::string>(s.text(0));
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  return db_error((*reader)->db, "get setting");
}

Status SqliteStore::set_setting(const std::string& key, const std::string& value) {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare(
      "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, key).bind(2, value);
  if (s.step() != SQLITE_DONE) return db_error(impl_->db, "set setting");
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
static Status replace_node_keys(sqlite3* db, const std::function<Result<sqlite3_stmt*>(const std::string&)>& prepare,
                                const NodeRecord& n) {
  {
    auto st = prepare("DELETE FROM node_keys WHERE node_id = ?");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, n.id);
    if (s.step() != SQLITE_DONE) return db_error(db, "replace node keys");
  }
  for (const auto& key : node_identity_keys(n.record)) {
    auto st = prepare("INSERT INTO node_keys (key, node_id) VALUES (?, ?)");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, key).bind(2, n.id);
    int rc = s.step();
    if (rc == SQLITE_CONSTRAINT) return make_error(ErrorKind::conflict, "another node has " + key);
    if (rc != SQLITE_DONE) return db_error(db, "insert node key");
  }
  return Ok{};
}

namespace {
Result<bool> insert_node_event(sqlite3* db, const std::function<Result<sqlite3_stmt*>(const std::string&)>& prepare,
                               const std::string& id, const std::string& from, const std::string& to,
                               const std::string& actor, const std::string& detail, std::int64_t at_ms) {
  auto st = prepare("INSERT INTO node_events (node_id, from_state, to_state, actor, detail, at_ms) VALUES (?,?,?,?,?,?)");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id).bind(2, from).bind(3, to).bind(4, actor).bind(5, detail).bind(6, at_ms);
  if (s.step() != SQLITE_DONE) return db_error(db, "insert node event");
  return true;
}
}  // namespace

Status SqliteStore::insert_node(const NodeRecord& n, const std::string& actor, const std::string& detail) {
  std::lock_guard lock(impl_->mutex);
  auto prepare = [this](const std::string& sql) { return impl_->prepare(sql); };
  auto done = impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare("INSERT INTO nodes (id, state, record_json, created_ms, updated_ms) VALUES (?,?,?,?,?)");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, n.id).bind(2, std::string(to_string(n.state))).bind(3, n.record.dump()).bind(4, n.created_ms).bind(5, n.updated_ms);
    int rc = s.step();
    if (rc == SQLITE_CONSTRAINT) return make_error(ErrorKind::conflict, "a node " + n.id + " exists");
    if (rc != SQLITE_DONE) return db_error(impl_->db, "insert node");
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

Result<std::optional<NodeRecord>> SqliteStore::get_node(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(std::string("SELECT ") + kNodeColumns + " FROM nodes WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  int rc = s.step();
  if (rc == SQLITE_ROW) {
    auto n = node_from_row(s);
    if (!n) return n.error();
    return std::optional<NodeRecord>(std::move(*n));
  }
  if (rc == SQLITE_DONE) return std::optional<NodeRecord>();
  return db_error((*reader)->db, "get node");
}

Result<std::optional<NodeRecord>> SqliteStore::find_node(const std::string& key) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(
      "SELECT n.id, n.state, n.record_json, n.created_ms, n.updated_ms FROM node_keys k JOIN nodes n ON n.id = k.node_id "
      "WHERE k.key = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, key);
  int rc = s.step();
  if (rc == SQLITE_ROW) {
    auto n = node_from_row(s);
    if (!n) return n.error();
    return std::optional<NodeRecord>(std::move(*n));
  }
  if (rc == SQLITE_DONE) return std::optional<NodeRecord>();
  return db_error((*reader)->db, "find node");
}

Result<std::vector<NodeRecord>> SqliteStore::list_nodes(const std::optional<std::string>& after_id, int limit) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(std::string("SELECT ") + kNodeColumns + " FROM nodes WHERE id > ? ORDER BY id LIMIT ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, after_id.value_or("")).bind(2, static_cast<std::int64_t>(limit));
  std::vector<NodeRecord> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    auto n = node_from_row(s);
    if (!n) return n.error();
    out.push_back(std::move(*n));
  }
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "list nodes");
  return out;
}

Result<bool> SqliteStore::update_node(const NodeRecord& n, std::int64_t expected_updated_ms) {
  std::lock_guard lock(impl_->mutex);
  auto prepare = [this](const std::string& sql) { return impl_->prepare(sql); };
  return impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare("UPDATE nodes SET record_json = ?, updated_ms = ? WHERE id = ? AND updated_ms = ?");
    if (!st) return st.error();
    Stmt s(*st);
    s.bind(1, n.record.dump()).bind(2, n.updated_ms).bind(3, n.id).bind(4, expected_updated_ms);
    if (s.step() != SQLITE_DONE) return db_error(impl_->db, "update node");
    if (sqlite3_changes(impl_->db) == 0) return false;
    if (auto k = replace_node_keys(impl_->db, prepare, n); !k) return k.error();
    return true;
  });
}

Result<bool> SqliteStore::transition_node(const NodeRecord& n, NodeState expected, std::int64_t expected_updated_ms,
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
    if (s.step() != SQLITE_DONE) return db_error(impl_->db, "transition node");
    if (sqlite3_changes(impl_->db) == 0) return false;
    if (auto k = replace_node_keys(impl_->db, prepare, n); !k) return k.error();
    if (auto e = insert_node_event(impl_->db, prepare, n.id, from, to, actor, detail, n.updated_ms); !e) return e.error();
    if (auto e = impl_->append_event("node", "transition", to, from, detail, text_field(n.record, "job_id"), "", n.id,
                                     text_field(n.record, "serial"), n.updated_ms);
        !e)
      return e.error();
    return true;
  });
}

Result<std::vector<NodeEvent>> SqliteStore::node_events(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(
      "SELECT seq, from_state, to_state, actor, detail, at_ms FROM node_events WHERE node_id = ? ORDER BY seq");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  std::vector<NodeEvent> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW)
    out.push_back(NodeEvent{s.integer(0), s.text(1), s.text(2), s.text(3), s.text(4), s.integer(5)});
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "node events");
  return out;
}

Result<bool> SqliteStore::delete_node(const std::string& id) {
  std::lock_guard lock(impl_->mutex);
  auto st = impl_->prepare("DELETE FROM nodes WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  if (s.step() != SQLITE_DONE) return db_error(impl_->db, "delete node");
  return sqlite3_changes(impl_->db) == 1;
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

Status SqliteStore::insert_fleet(const FleetRecord& f, const std::vector<FleetMember>& members) {
  std::lock_guard lock(impl_->mutex);
  auto done = impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare(
        "INSERT INTO fleets (id, status, spec_json, reason, created_ms, updated_ms) VALUES (?,?,?,?,?,?)");
    if (!st) return st.error();
    {
      Stmt s(*st);
      s.bind(1, f.id).bind(2, fleet_status_text(f.status)).bind(3, f.spec.dump()).bind(4, f.reason);
      s.bind(5, f.created_ms).bind(6, f.updated_ms);
      int rc = s.step();
      if (rc == SQLITE_CONSTRAINT) return make_error(ErrorKind::conflict, "fleet " + f.id + " already exists");
      if (rc != SQLITE_DONE) return db_error(impl_->db, "insert fleet");
    }
    for (const auto& m : members) {
      auto ms = impl_->prepare("INSERT INTO fleet_members (fleet_id, position, server_id, serial) VALUES (?,?,?,?)");
      if (!ms) return ms.error();
      Stmt s(*ms);
      s.bind(1, f.id).bind(2, static_cast<std::int64_t>(m.position)).bind(3, m.server_id).bind(4, m.serial);
      if (s.step() != SQLITE_DONE) return db_error(impl_->db, "insert fleet member");
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

Result<std::optional<FleetRecord>> SqliteStore::get_fleet(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(std::string("SELECT ") + kFleetColumns + " FROM fleets WHERE id = ?");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  int rc = s.step();
  if (rc == SQLITE_ROW) {
    auto f = fleet_from_row(s);
    if (!f) return f.error();
    return std::optional<FleetRecord>(std::move(*f));
  }
  if (rc == SQLITE_DONE) return std::optional<FleetRecord>();
  return db_error((*reader)->db, "get fleet");
}

Result<std::vector<FleetRecord>> SqliteStore::list_fleets(const FleetFilter& f) {
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
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    auto fleet = fleet_from_row(s);
    if (!fleet) return fleet.error();
    out.push_back(std::move(*fleet));
  }
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "list fleets");
  return out;
}

Result<std::vector<std::string>> SqliteStore::active_fleet_ids() {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare("SELECT id FROM fleets WHERE status IN ('running', 'paused') ORDER BY seq");
  if (!st) return st.error();
  Stmt s(*st);
  std::vector<std::string> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) out.push_back(s.text(0));
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "active fleets");
  return out;
}

Result<bool> SqliteStore::transition_fleet(const std::string& id, FleetStatus expected, FleetStatus next,
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
      if (s.step() != SQLITE_DONE) return db_error(impl_->db, "transition fleet");
    }
    if (sqlite3_changes(impl_->db) == 0) return false;
    if (auto e = impl_->append_event("fleet", "transition", to, from, reason, "", id, "", "", now_ms); !e)
      return e.error();
    return true;
  });
}

Result<bool> SqliteStore::set_fleet_reason(const std::string& id, const std::string& reason, std::int64_t now_ms) {
  std::lock_guard lock(impl_->mutex);
  return impl_->transaction([&]() -> Result<bool> {
    auto st = impl_->prepare("UPDATE fleets SET reason = ?, updated_ms = ? WHERE id = ? AND reason = ''");
    if (!st) return st.error();
    {
      Stmt s(*st);
      s.bind(1, reason).bind(2, now_ms).bind(3, id);
      if (s.step() != SQLITE_DONE) return db_error(impl_->db, "set fleet reason");
    }
    if (sqlite3_changes(impl_->db) == 0) return false;
    if (auto e = impl_->append_event("fleet", "stopped_launching", "", "", reason, "", id, "", "", now_ms); !e)
      return e.error();
    return true;
  });
}

Result<std::vector<FleetMember>> SqliteStore::fleet_members(const std::string& id, const FleetMemberQuery& q) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  // The outcome is the job's last succeeded/failed/canceled transition (transition_job keeps it).
  std::string sql =
      "SELECT m.position, m.server_id, m.serial, m.job_id, COALESCE(j.status, ''), COALESCE(j.phase, ''), "
      "m.outcome, COALESCE(j.failed_step, ''), COALESCE(j.error, '') "
      "FROM fleet_members m LEFT JOIN jobs j ON j.id = m.job_id WHERE m.fleet_id = ? AND m.position < ?";
  if (q.unlaunched_only) sql += " AND m.job_id = ''";
  if (q.failed_only) sql += " AND m.outcome IN ('failed', 'canceled')";
  sql += " ORDER BY m.position LIMIT ?";
  auto st = (*reader)->prepare(sql);
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id).bind(2, static_cast<std::int64_t>(q.below_position)).bind(3, static_cast<std::int64_t>(q.limit));
  std::vector<FleetMember> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
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
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "fleet members");
  return out;
}

Result<std::vector<FleetCountRow>> SqliteStore::fleet_counts(const std::string& id) {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare(
      "SELECT job_id <> '', job_status, outcome, COUNT(*) FROM fleet_members WHERE fleet_id = ? GROUP BY 1, 2, 3");
  if (!st) return st.error();
  Stmt s(*st);
  s.bind(1, id);
  std::vector<FleetCountRow> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
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
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "fleet counts");
  return out;
}

Result<bool> SqliteStore::insert_fleet_job(const JobRecord& job, const std::string& fleet_id, int position) {
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
      if (s.step() != SQLITE_DONE) return db_error(impl_->db, "claim fleet member");
    }
    if (sqlite3_changes(impl_->db) == 0) return false;
    if (auto inserted = impl_->insert_job_row(job); !inserted) return inserted.error();
    return true;
  });
}

Result<std::vector<EventRecord>> SqliteStore::events_after(std::int64_t after_seq, const EventFilter& f, int limit) {
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
  int rc;
  while ((rc = s.step()) == SQLITE_ROW)
    out.push_back(EventRecord{s.integer(0), s.text(1), s.text(2), s.text(3), s.text(4), s.text(5), s.text(6),
                              s.text(7), s.text(8), s.text(9), s.integer(10)});
  if (rc != SQLITE_DONE) return db_error((*reader)->db, "events");
  return out;
}

Result<std::int64_t> SqliteStore::last_event_seq() {
  auto reader = impl_->reader();
  if (!reader) return reader.error();
  auto st = (*reader)->prepare("SELECT COALESCE(MAX(seq), 0) FROM events");
  if (!st) return st.error();
  Stmt s(*st);
  if (s.step() != SQLITE_ROW) return db_error((*reader)->db, "last event");
  return s.integer(0);
}

}  // namespace provisioner
