#pragma once
// The API's routing, authentication and error mapping, free of any HTTP library: the
// listener edge (http_server.cpp) turns wire requests into ApiRequest and back.
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "controller/api/auth.hpp"

namespace provisioner {

class JobService;
class ServerService;
namespace artifacts {
class ArtifactStore;
class UploadService;
}
class Logger;
class Metrics;
class Store;

struct ApiRequest {
  std::string method;
  std::string path;  // decoded, without query
  std::map<std::string, std::string> query;
  std::function<std::string(const std::string&)> header;  // "" when absent
  std::string body;
  // Routes that stream their body (uploads) read it piece by piece instead; 0 at the end.
  std::function<Result<std::size_t>(char*, std::size_t)> read_body;
};

struct ApiResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct RouteSpec {
  std::string method;
  std::string pattern;  // "/api/v1/jobs/{id}"
  Permission permission;
  bool streams_body = false;  // the edge hands the body over as a stream, not a string
};

// Every route the controller answers; the OpenAPI test checks the document against it.
const std::vector<RouteSpec>& api_routes();

class ApiHandler {
 public:
  ApiHandler(JobService& jobs, ServerService& servers, artifacts::UploadService& uploads,
             const artifacts::ArtifactStore& artifacts, Store& store, Metrics& metrics, const TokenAuthenticator& auth,
             const Logger& log);

  ApiResponse handle(const ApiRequest& request);

  // Whether this request's route streams its body, and the largest body it accepts.
  bool streams_body(const std::string& method, const std::string& path) const;
  std::uint64_t max_streamed_body() const;

  // For answers the edge gives itself (413 before reading a body).
  static ApiResponse error_response(int status, const std::string& message);
  void count(const std::string& method, const std::string& route, int status, std::chrono::steady_clock::duration took);

 private:
  ApiResponse dispatch(const RouteSpec& route, const std::vector<std::string>& params, const ApiRequest& request);

  JobService& jobs_;
  ServerService& servers_;
  artifacts::UploadService& uploads_;
  const artifacts::ArtifactStore& artifacts_;
  Store& store_;
  Metrics& metrics_;
  const TokenAuthenticator& auth_;
  const Logger& log_;
};

}  // namespace provisioner
