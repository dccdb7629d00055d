#include "controller/logging/logger.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "common/redact.hpp"

namespace provisioner {

Logger::Logger(Format format, std::string_view level, const std::optional<std::filesystem::path>& file)
    : format_(format) {
  std::shared_ptr<spdlog::sinks::sink> sink;
  if (file) sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file->string());
  else sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  sink_ = std::make_shared<spdlog::logger>("provisioner", sink);
  // JSON lines carry their own timestamp and level inside the object.
  sink_->set_pattern(format == Format::json ? "%v" : "%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  sink_->set_level(spdlog::level::from_str(std::string(level)));
  sink_->flush_on(spdlog::level::trace);  // a crashed controller must not lose its last lines
}

Logger::~Logger() = default;

LogFields Logger::job_fields(std::string_view job_id, std::string_view serial, LogFields extra) {
  LogFields fields{{"job_id", std::string(job_id)}, {"serial", std::string(serial)}};
  for (auto& f : extra) fields.push_back(std::move(f));
  return fields;
}

void Logger::write(int level, std::string_view message, const LogFields& fields) const {
  auto lvl = static_cast<spdlog::level::level_enum>(level);
  if (!sink_->should_log(lvl)) return;
  auto value_of = [](const std::pair<std::string, std::string>& f) {
    return is_secret_field(f.first) ? std::string(kRedacted) : f.second;
  };
  std::string line;
  if (format_ == Format::json) {
    nlohmann::json j;
    j["ts"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
    j["level"] = spdlog::level::to_string_view(lvl).data();
    j["msg"] = message;
    for (const auto& f : fields) j[f.first] = value_of(f);
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line = message;
    for (const auto& f : fields) {
      std::string v = value_of(f);
      bool quote = v.empty() || v.find_first_of(" \t\"=") != std::string::npos;
      line += " " + f.first + "=" + (quote ? nlohmann::json(v).dump() : v);
    }
  }
  sink_->log(lvl, "{}", line);
}

void Logger::debug(std::string_view m, const LogFields& f) const { write(spdlog::level::debug, m, f); }
void Logger::info(std::string_view m, const LogFields& f) const { write(spdlog::level::info, m, f); }
void Logger::warn(std::string_view m, const LogFields& f) const { write(spdlog::level::warn, m, f); }
void Logger::error(std::string_view m, const LogFields& f) const { write(spdlog::level::err, m, f); }

}  // namespace provisioner
