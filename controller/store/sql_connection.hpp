#pragma once
// What the store needs of a SQL database, and no more: prepared statements with positional
// `?` parameters, a row at a time, the rows a write changed, and the few things the dialects
// do differently (how a writing transaction begins, where the schema version lives, how
// rewritten bytes are flushed). SQLite (sqlite_connection.cpp) and PostgreSQL
// (postgres_connection.cpp) implement it; SqlStore (sql_store.cpp) holds every query, once.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace provisioner {

enum class Step { row, done, constraint, failed };

class SqlStatement {
 public:
  virtual ~SqlStatement() = default;
  virtual void bind_text(int index, const std::string& value) = 0;  // 1-based, like `?1`
  virtual void bind_integer(int index, std::int64_t value) = 0;     // unbound parameters are NULL
  virtual Step step() = 0;
  virtual std::string text(int column) const = 0;
  virtual std::int64_t integer(int column) const = 0;
  virtual void reset() = 0;  // ready to bind and run again
};

class SqlConnection {
 public:
  virtual ~SqlConnection() = default;
  // Prepared once per connection and kept: preparing costs more than running.
  virtual Result<SqlStatement*> prepare(const std::string& sql) = 0;
  virtual Status exec(const std::string& sql) = 0;  // statements without parameters or rows
  virtual std::int64_t changes() = 0;              // rows the last write changed
  virtual std::string last_error() = 0;
  // The last failure was the database refusing a transaction that raced another one
  // (PostgreSQL: serialization failure or deadlock): running it again may succeed.
  virtual bool retryable() { return false; }

  // The first column of the first row of a query without parameters; 0 when there is no row.
  Result<std::int64_t> query_integer(const std::string& sql) {
    auto st = prepare(sql);
    if (!st) return st.error();
    std::int64_t value = 0;
    auto step = (*st)->step();
    if (step == Step::row) value = (*st)->integer(0);
    (*st)->reset();
    if (step != Step::row && step != Step::done) return make_error(ErrorKind::internal, sql + ": " + last_error());
    return value;
  }
};

class SqlDatabase {
 public:
  virtual ~SqlDatabase() = default;
  virtual std::string describe() const = 0;  // for messages; never a password
  virtual Result<std::unique_ptr<SqlConnection>> open_writer() = 0;
  virtual Result<std::unique_ptr<SqlConnection>> open_reader() = 0;
  virtual const char* begin_write() const = 0;  // the statement that opens a writing transaction
  virtual const char* rollback() const { return "ROLLBACK"; }
  // Migrations written for SQLite, in this dialect.
  virtual std::string dialect(std::string_view sql) const { return std::string(sql); }
  // The schema version stored in the database (0 for an empty one), and its new value,
  // written inside the migration's transaction.
  virtual Result<int> schema_version(SqlConnection& writer) = 0;
  virtual Status set_schema_version(SqlConnection& writer, int version) = 0;
  // After the last migration (PostgreSQL: lets the next controller that starts migrate).
  virtual Status migrations_done(SqlConnection&) { return Ok{}; }
  virtual Status flush_rewrites(SqlConnection& writer) = 0;
};

// SQLite in WAL mode (see sqlite_connection.cpp).
std::unique_ptr<SqlDatabase> sqlite_database(const std::string& file);
// PostgreSQL through libpq (see postgres_connection.cpp): a URL or key=value conninfo.
std::unique_ptr<SqlDatabase> postgres_database(const std::string& url);

}  // namespace provisioner
