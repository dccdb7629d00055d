// SQLite behind SqlConnection: WAL, foreign keys, statements cached per connection.
#include <sqlite3.h>

#include <unordered_map>

#include "controller/store/sql_connection.hpp"

namespace provisioner {

namespace {

class SqliteStatement final : public SqlStatement {
 public:
  explicit SqliteStatement(sqlite3_stmt* s) : s_(s) {}
  ~SqliteStatement() override { sqlite3_finalize(s_); }
  void bind_text(int i, const std::string& v) override {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void bind_integer(int i, std::int64_t v) override { sqlite3_bind_int64(s_, i, v); }
  Step step() override {
    switch (sqlite3_step(s_)) {
      case SQLITE_ROW: return Step::row;
      case SQLITE_DONE: return Step::done;
      case SQLITE_CONSTRAINT: return Step::constraint;
      default: return Step::failed;
    }
  }
  std::string text(int col) const override {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col))) : std::string();
  }
  std::int64_t integer(int col) const override { return sqlite3_column_int64(s_, col); }
  void reset() override {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }

 private:
  sqlite3_stmt* s_;
};

class SqliteConnection final : public SqlConnection {
 public:
  explicit SqliteConnection(sqlite3* db) : db_(db) {}
  ~SqliteConnection() override {
    statements_.clear();
    sqlite3_close(db_);
  }
  Result<SqlStatement*> prepare(const std::string& sql) override {
    if (auto it = statements_.find(sql); it != statements_.end()) return it->second.get();
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
      return make_error(ErrorKind::internal, "prepare: " + last_error());
    return statements_.emplace(sql, std::make_unique<SqliteStatement>(s)).first->second.get();
  }
  Status exec(const std::string& sql) override {
    char* msg = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
      std::string m = msg ? msg : "unknown";
      sqlite3_free(msg);
      return make_error(ErrorKind::internal, "sqlite: " + m);
    }
    return Ok{};
  }
  std::int64_t changes() override { return sqlite3_changes(db_); }
  std::string last_error() override { return sqlite3_errmsg(db_); }

 private:
  sqlite3* db_;
  std::unordered_map<std::string, std::unique_ptr<SqliteStatement>> statements_;
};

class SqliteDatabase final : public SqlDatabase {
 public:
  explicit SqliteDatabase(std::string file) : file_(std::move(file)) {}
  std::string describe() const override { return file_; }

  Result<std::unique_ptr<SqlConnection>> open_writer() override {
    auto c = open(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (!c) return c.error();
    // WAL: readers never block the writer; NORMAL sync keeps every commit across a process
    // crash (SIGKILL) and costs no fsync per commit. secure_delete: the bytes of a rewritten
    // or deleted row are zeroed, so a secret sealed in place leaves no clear copy in free space.
    for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON",
                               "PRAGMA secure_delete=ON"})
      if (auto s = (*c)->exec(pragma); !s) return s.error();
    return c;
  }
  // A read-only WAL connection: it reads beside the writer.
  Result<std::unique_ptr<SqlConnection>> open_reader() override { return open(SQLITE_OPEN_READONLY); }

  const char* begin_write() const override { return "BEGIN IMMEDIATE"; }

  Result<int> schema_version(SqlConnection& writer) override {
    auto version = writer.query_integer("PRAGMA user_version");
    if (!version) return version.error();
    return static_cast<int>(*version);
  }
  Status set_schema_version(SqlConnection& writer, int version) override {
    return writer.exec("PRAGMA user_version = " + std::to_string(version));
  }
  // A checkpoint that truncates the WAL: the bytes a rewrite replaced are nowhere on disk.
  Status flush_rewrites(SqlConnection& writer) override { return writer.exec("PRAGMA wal_checkpoint(TRUNCATE)"); }

 private:
  Result<std::unique_ptr<SqlConnection>> open(int flags) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(file_.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
      std::string why = db ? sqlite3_errmsg(db) : "out of memory";
      sqlite3_close(db);
      return make_error(ErrorKind::unavailable, "cannot open database " + file_ + ": " + why);
    }
    sqlite3_busy_timeout(db, 5000);
    return std::unique_ptr<SqlConnection>(std::make_unique<SqliteConnection>(db));
  }
  std::string file_;
};

}  // namespace

std::unique_ptr<SqlDatabase> sqlite_database(const std::string& file) { return std::make_unique<SqliteDatabase>(file); }

}  // namespace provisioner
