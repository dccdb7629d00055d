// PostgreSQL behind SqlConnection, through libpq.
//
// The store's SQL is written once with `?` parameters; here each `?` becomes `$n`, and a
// statement is prepared on the server once per connection and parameter types (text or
// bigint, as bound: an unbound parameter is a NULL text), then run with PQexecPrepared.
// Writing transactions are SERIALIZABLE: what SQLite's one writer gives for free (a check and
// the write it guards cannot be split by another writer) holds across controllers, and the
// database refuses a transaction that raced another (SQLSTATE 40001/40P01), which the store
// runs again.
//
// The password comes from the URL, PGPASSWORD or ~/.pgpass (libpq's own conventions) and is
// never part of a message: describe() names host, port, database and user only.
#include <libpq-fe.h>

#include <cstdlib>
#include <utility>
#include <unordered_map>
#include <vector>

#include "controller/store/sql_connection.hpp"

namespace provisioner {

namespace {

// Session-level advisory locks: one controller migrates at a time; one controller uses a
// database at a time (its writer holds the lock while it runs: work is not leased yet, so a
// second controller would drive the same BMCs).
constexpr const char* kMigrationLock = "SELECT pg_advisory_lock(7201400115)";
constexpr const char* kMigrationUnlock = "SELECT pg_advisory_unlock(7201400115)";
constexpr const char* kControllerLock = "SELECT pg_try_advisory_lock(7201400116)";

// How a writing transaction begins. The connection holds it back and sends it in one round
// trip with the transaction's first statement (libpq's pipeline mode).
constexpr const char* kBeginWrite = "BEGIN ISOLATION LEVEL SERIALIZABLE";

constexpr Oid kTextOid = 25;
constexpr Oid kInt8Oid = 20;

// `?` → `$1`, `$2`, … outside quoted strings and identifiers.
std::string numbered_parameters(const std::string& sql, int& count) {
  std::string out;
  out.reserve(sql.size() + 16);
  count = 0;
  char quote = 0;
  for (char c : sql) {
    if (quote) {
      if (c == quote) quote = 0;
      out += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      out += c;
    } else if (c == '?') {
      out += '$' + std::to_string(++count);
    } else {
      out += c;
    }
  }
  return out;
}

class PostgresConnection;

class PostgresStatement final : public SqlStatement {
 public:
  PostgresStatement(PostgresConnection& c, std::string sql, int params)
      : c_(c), sql_(std::move(sql)), values_(static_cast<std::size_t>(params)),
        bound_(static_cast<std::size_t>(params), false), types_(static_cast<std::size_t>(params), kTextOid) {}
  ~PostgresStatement() override { clear_result(); }

  void bind_text(int i, const std::string& v) override { set(i, v, kTextOid); }
  void bind_integer(int i, std::int64_t v) override { set(i, std::to_string(v), kInt8Oid); }
  Step step() override;
  std::string text(int col) const override {
    if (!res_ || PQgetisnull(res_, row_, col)) return {};
    return std::string(PQgetvalue(res_, row_, col), static_cast<std::size_t>(PQgetlength(res_, row_, col)));
  }
  std::int64_t integer(int col) const override {
    if (!res_ || PQgetisnull(res_, row_, col)) return 0;
    return std::strtoll(PQgetvalue(res_, row_, col), nullptr, 10);
  }
  void reset() override {
    clear_result();
    std::fill(bound_.begin(), bound_.end(), false);
    std::fill(types_.begin(), types_.end(), kTextOid);
  }

 private:
  void set(int i, std::string v, Oid type) {
    if (i < 1 || static_cast<std::size_t>(i) > values_.size()) return;
    values_[i - 1] = std::move(v);
    bound_[i - 1] = true;
    types_[i - 1] = type;
  }
  PGresult* run_after_begin(const std::string& name, const std::vector<const char*>& values);
  void clear_result() {
    if (res_) PQclear(res_);
    res_ = nullptr;
    row_ = -1;
  }

  PostgresConnection& c_;
  std::string sql_;
  std::vector<std::string> values_;
  std::vector<bool> bound_;
  std::vector<Oid> types_;
  // Server-side prepared statements of this SQL, by parameter types ("tI-": text, bigint).
  std::unordered_map<std::string, std::string> prepared_;
  PGresult* res_ = nullptr;
  int row_ = -1;
};

class PostgresConnection final : public SqlConnection {
 public:
  explicit PostgresConnection(PGconn* conn, bool exclusive) : conn_(conn), exclusive_(exclusive) {}

  // Takes the one-controller lock (the writer): false when another controller holds it.
  Result<bool> take_controller_lock() {
    PGresult* res = PQexec(conn_, kControllerLock);
    const bool ok = note(res);
    const bool got = ok && PQntuples(res) == 1 && std::string(PQgetvalue(res, 0, 0)) == "t";
    PQclear(res);
    if (!ok) return make_error(ErrorKind::unavailable, "postgresql: " + error_);
    return got;
  }
  ~PostgresConnection() override {
    statements_.clear();
    PQfinish(conn_);
  }

  Result<SqlStatement*> prepare(const std::string& sql) override {
    if (fenced_) return make_error(ErrorKind::unavailable, error_);
    if (auto it = statements_.find(sql); it != statements_.end()) return it->second.get();
    int params = 0;
    auto numbered = numbered_parameters(sql, params);
    return statements_.emplace(sql, std::make_unique<PostgresStatement>(*this, std::move(numbered), params))
        .first->second.get();
  }

  Status exec(const std::string& sql) override {
    if (fenced_) return make_error(ErrorKind::unavailable, error_);
    if (sql == kBeginWrite) {
      pending_begin_ = true;
      return Ok{};
    }
    if (pending_begin_) {
      pending_begin_ = false;
      if (sql == "COMMIT" || sql == "ROLLBACK") return Ok{};  // nothing was sent
      if (auto s = exec(kBeginWrite); !s) return s;  // held back: sent now, on its own
      pending_begin_ = false;
    }
    PGresult* res = PQexec(conn_, sql.c_str());
    const bool ok = note(res);
    PQclear(res);
    if (!ok) return make_error(ErrorKind::internal, "postgresql: " + error_);
    return Ok{};
  }
  std::int64_t changes() override { return changes_; }
  std::string last_error() override { return error_; }
  bool retryable() override { return sqlstate_ == "40001" || sqlstate_ == "40P01"; }

  PGconn* conn() { return conn_; }
  // The held-back BEGIN, taken by the statement that sends it along.
  bool take_pending_begin() { return std::exchange(pending_begin_, false); }
  std::string next_statement_name() { return "p" + std::to_string(++statement_count_); }
  const std::string& sqlstate() const { return sqlstate_; }

  // Records what a result says (error, SQLSTATE, rows changed); true when it succeeded.
  bool note(PGresult* res) {
    auto status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
      sqlstate_.clear();
      const char* n = PQcmdTuples(res);
      // Writes only (INSERT, UPDATE, DELETE), like sqlite3_changes: a SELECT or a COMMIT
      // leaves the count of the last write.
      if (status == PGRES_COMMAND_OK && n && *n) changes_ = std::strtoll(n, nullptr, 10);
      return true;
    }
    const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    sqlstate_ = state ? state : "";
    const char* msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    error_ = msg ? msg : PQerrorMessage(conn_);
    while (!error_.empty() && (error_.back() == '\n' || error_.back() == ' ')) error_.pop_back();
    if (PQstatus(conn_) == CONNECTION_BAD) {
      // The server went away: the next statement tries the connection again (libpq's reset).
      error_ += " (connection lost)";
      PQreset(conn_);
      statements_prepared_lost();
      // The writer's lock went with the old session: without it again this controller stops
      // writing (another may have taken the database over).
      if (exclusive_ && PQstatus(conn_) == CONNECTION_OK) {
        PGresult* lock = PQexec(conn_, kControllerLock);
        const bool got = PQresultStatus(lock) == PGRES_TUPLES_OK && std::string(PQgetvalue(lock, 0, 0)) == "t";
        PQclear(lock);
        if (!got) {
          fenced_ = true;
          error_ = "another controller took the database over while this one was cut off from it";
        }
      }
    }
    return false;
  }

 private:
  void statements_prepared_lost();

  PGconn* conn_;
  bool exclusive_ = false;
  bool fenced_ = false;
  bool pending_begin_ = false;
  std::unordered_map<std::string, std::unique_ptr<PostgresStatement>> statements_;
  std::int64_t changes_ = 0;
  std::string error_, sqlstate_;
  int statement_count_ = 0;
  friend class PostgresStatement;

 public:
  int generation = 0;  // bumped when a reset dropped the server's prepared statements
};

void PostgresConnection::statements_prepared_lost() { ++generation; }

// BEGIN and the transaction's first statement in one round trip: both sent, one sync, then
// their results in order. nullptr when BEGIN failed (the connection notes why); else the
// statement's result.
PGresult* PostgresStatement::run_after_begin(const std::string& name, const std::vector<const char*>& values) {
  PGconn* conn = c_.conn();
  if (!PQenterPipelineMode(conn)) {
    PGresult* begin = PQexec(conn, kBeginWrite);
    const bool ok = c_.note(begin);
    PQclear(begin);
    if (!ok) return nullptr;
    return PQexecPrepared(conn, name.c_str(), static_cast<int>(values.size()), values.data(), nullptr, nullptr, 0);
  }
  PQsendQueryParams(conn, kBeginWrite, 0, nullptr, nullptr, nullptr, nullptr, 0);
  PQsendQueryPrepared(conn, name.c_str(), static_cast<int>(values.size()), values.data(), nullptr, nullptr, 0);
  PQpipelineSync(conn);
  std::vector<PGresult*> results;  // BEGIN's, then the statement's
  for (int empty = 0; empty < 8;) {
    PGresult* r = PQgetResult(conn);
    if (!r) {
      if (PQstatus(conn) == CONNECTION_BAD) break;
      ++empty;  // the end of one query's results
      continue;
    }
    if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
      PQclear(r);
      break;
    }
    results.push_back(r);
  }
  PQexitPipelineMode(conn);
  PGresult* statement = results.size() == 2 ? results[1] : nullptr;
  const bool begun = !results.empty() && c_.note(results[0]);
  if (results.empty()) c_.note(nullptr);
  for (std::size_t i = 0; i < results.size(); ++i)
    if (results[i] != statement || !begun) PQclear(results[i]);
  if (!begun) return nullptr;
  return statement ? statement : PQmakeEmptyPGresult(conn, PGRES_FATAL_ERROR);
}

Step PostgresStatement::step() {
  if (res_) {
    if (++row_ < PQntuples(res_)) return Step::row;
    return Step::done;
  }
  std::string signature = std::to_string(c_.generation) + ":";
  for (std::size_t i = 0; i < types_.size(); ++i) signature += !bound_[i] ? '-' : types_[i] == kInt8Oid ? 'I' : 't';
  auto it = prepared_.find(signature);
  if (it == prepared_.end()) {
    auto name = c_.next_statement_name();
    PGresult* p = PQprepare(c_.conn(), name.c_str(), sql_.c_str(), static_cast<int>(types_.size()), types_.data());
    const bool ok = c_.note(p);
    PQclear(p);
    if (!ok) return Step::failed;
    it = prepared_.emplace(signature, name).first;
  }
  std::vector<const char*> values(values_.size());
  for (std::size_t i = 0; i < values_.size(); ++i) values[i] = bound_[i] ? values_[i].c_str() : nullptr;
  if (c_.take_pending_begin()) {
    res_ = run_after_begin(it->second, values);
    if (!res_) return Step::failed;
  } else {
    res_ = PQexecPrepared(c_.conn(), it->second.c_str(), static_cast<int>(values.size()), values.data(), nullptr,
                          nullptr, 0);
  }
  if (!c_.note(res_)) {
    const bool constraint = c_.sqlstate().rfind("23", 0) == 0;
    clear_result();
    return constraint ? Step::constraint : Step::failed;
  }
  if (PQresultStatus(res_) != PGRES_TUPLES_OK) {
    clear_result();
    return Step::done;
  }
  row_ = 0;
  if (row_ < PQntuples(res_)) return Step::row;
  return Step::done;
}

class PostgresDatabase final : public SqlDatabase {
 public:
  explicit PostgresDatabase(std::string url) : url_(std::move(url)) {
    // What to call it in messages: host, port, database, user; never the password.
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(url_.c_str(), &err);
    if (err) PQfreemem(err);
    std::string host, port, db, user;
    for (auto* o = opts; o && o->keyword; ++o) {
      if (!o->val) continue;
      std::string k = o->keyword;
      if (k == "host") host = o->val;
      if (k == "port") port = o->val;
      if (k == "dbname") db = o->val;
      if (k == "user") user = o->val;
    }
    if (opts) PQconninfoFree(opts);
    describe_ = "postgresql database '" + db + "' as '" + user + "' on " + (host.empty() ? "the default socket" : host) +
                (port.empty() ? "" : ":" + port);
  }
  std::string describe() const override { return describe_; }

  Result<std::unique_ptr<SqlConnection>> open_writer() override { return open(false); }
  Result<std::unique_ptr<SqlConnection>> open_reader() override { return open(true); }
  const char* begin_write() const override { return kBeginWrite; }

  std::string dialect(std::string_view sql) const override {
    std::string out(sql);
    const std::string from = "INTEGER PRIMARY KEY AUTOINCREMENT", to = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY";
    for (auto at = out.find(from); at != std::string::npos; at = out.find(from, at + to.size()))
      out.replace(at, from.size(), to);
    return out;
  }

  // The version lives in a one-row table; the lock is held until migrations_done.
  Result<int> schema_version(SqlConnection& writer) override {
    if (auto s = writer.exec(kMigrationLock); !s) return s.error();
    if (auto s = writer.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"); !s)
      return s.error();
    auto version = writer.query_integer("SELECT version FROM schema_version");
    if (!version) return version.error();
    return static_cast<int>(*version);
  }
  Status set_schema_version(SqlConnection& writer, int version) override {
    return writer.exec("DELETE FROM schema_version; INSERT INTO schema_version (version) VALUES (" +
                       std::to_string(version) + ")");
  }
  Status migrations_done(SqlConnection& writer) override { return writer.exec(kMigrationUnlock); }

  // Rewritten rows leave their old versions in the table's pages until a vacuum; VACUUM FULL
  // writes the tables anew and drops the old files. (The server's WAL keeps the old bytes
  // until it recycles its segments: PostgreSQL offers no way to scrub those.)
  Status flush_rewrites(SqlConnection& writer) override { return writer.exec("VACUUM FULL jobs"); }

 private:
  Result<std::unique_ptr<SqlConnection>> open(bool read_only) {
    PGconn* conn = PQconnectdb(url_.c_str());
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
      std::string why = conn ? PQerrorMessage(conn) : "out of memory";
      while (!why.empty() && why.back() == '\n') why.pop_back();
      PQfinish(conn);
      return make_error(ErrorKind::unavailable, "cannot connect to the " + describe_ + ": " + why);
    }
    auto c = std::make_unique<PostgresConnection>(conn, !read_only);
    // Notices (e.g. "relation already exists, skipping") are not errors: not on stderr.
    PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);
    if (auto s = c->exec(read_only ? "SET default_transaction_read_only = on" : "SET client_min_messages = warning"); !s)
      return s.error();
    if (!read_only) {
      auto got = c->take_controller_lock();
      if (!got) return got.error();
      if (!*got)
        return make_error(ErrorKind::unavailable,
                          "another controller is using the " + describe_ +
                              " (one controller per database until work is leased across controllers)");
    }
    return std::unique_ptr<SqlConnection>(std::move(c));
  }
  std::string url_, describe_;
};

}  // namespace

std::unique_ptr<SqlDatabase> postgres_database(const std::string& url) {
  return std::make_unique<PostgresDatabase>(url);
}

}  // namespace provisioner
