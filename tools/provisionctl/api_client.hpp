#pragma once
// provisionctl's HTTP client: the controller's API over libcurl, the bearer token on every
// request, API errors turned into their message and field paths.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <vector>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace provisionctl {

struct Context {
  std::string name;
  std::string url;    // http(s)://host:port
  std::string token;  // never printed
  std::string ca_file;
  bool insecure = false;  // skip TLS verification (a lab with a self-signed certificate)
};

struct Answer {
  long status = 0;
  std::string body;
  nlohmann::json json() const;  // null when the body is not JSON
};

// What went wrong, in the API's words: the message and every field path.
struct ApiError : std::runtime_error {
  ApiError(long status, std::string message, std::vector<std::pair<std::string, std::string>> fields);
  long status;
  std::vector<std::pair<std::string, std::string>> fields;
};

// The controller could not be reached at all (no HTTP answer).
struct Unreachable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ApiClient {
 public:
  explicit ApiClient(Context context);
  ~ApiClient();

  Answer request(const std::string& method, const std::string& target, const std::string& body = "",
                 const std::string& content_type = "application/json");
  // request(), and a non-2xx answer thrown as ApiError.
  nlohmann::json call(const std::string& method, const std::string& target, const nlohmann::json& body = nullptr);

  // Streams a file as the request body (no copy in memory); `progress(sent, total)`.
  nlohmann::json upload(const std::string& target, const std::filesystem::path& file,
                        const std::function<void(std::uint64_t, std::uint64_t)>& progress);

  // Reads GET /api/v1/events?<query> and calls `on_event(id, type, data)` for each event until
  // it returns false. Reconnects with Last-Event-ID when the stream drops.
  void events(const std::string& query,
              const std::function<bool(const std::string& id, const std::string& type, const nlohmann::json& data)>&
                  on_event);

  const Context& context() const { return context_; }

 private:
  void* prepare(const std::string& method, const std::string& target);  // a CURL*, reset
  Context context_;
  void* curl_ = nullptr;
};

std::string url_encode(const std::string& text);

}  // namespace provisionctl
