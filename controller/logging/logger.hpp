#pragma once
// The one structured logger: every line is a message plus key/value fields; values of
// secret-named fields are redacted here, so a caller cannot leak one by accident.
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace spdlog {
class logger;
}

namespace provisioner {

using LogFields = std::vector<std::pair<std::string, std::string>>;

class Logger {
 public:
  enum class Format { text, json };

  // Writes to stderr, or to `file` when given. `level`: debug|info|warn|error.
  Logger(Format format, std::string_view level, const std::optional<std::filesystem::path>& file = {});
  ~Logger();

  void debug(std::string_view message, const LogFields& fields = {}) const;
  void info(std::string_view message, const LogFields& fields = {}) const;
  void warn(std::string_view message, const LogFields& fields = {}) const;
  void error(std::string_view message, const LogFields& fields = {}) const;

  // Fields every line about a job carries.
  static LogFields job_fields(std::string_view job_id, std::string_view serial, LogFields extra = {});

 private:
  void write(int level, std::string_view message, const LogFields& fields) const;
  Format format_;
  std::shared_ptr<spdlog::logger> sink_;
};

}  // namespace provisioner
