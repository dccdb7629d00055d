#pragma once
// The API's routing, authentication and error mapping, free of any HTTP library: the
// listener edge (http_server.cpp) turns wire requests into ApiRequest and back.
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "controller/api/auth.hpp"

namespace provisioner {

class BootService;
class FleetService;
class JobService;
class NamedRecipes;
class NodeService;
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
             const Logger& log, NamedRecipes* recipes = nullptr);

  // Nodes and the network boot endpoints (null: the routes answer 404 "nodes are off").
  void set_network_boot(NodeService* nodes, BootService* boot) {
    nodes_ = nodes;
    boot_ = boot;
  }

  void set_fleets(FleetService* fleets) { fleets_ = fleets; }

  ApiResponse handle(const ApiRequest& request);

  // Judges a request from its line and headers alone, before any body is read: the answer
  // (404, 405, 401, 403) when it must be refused, nullopt when its body may be read. A
  // refusal is counted in the metrics here; `handle` checks the same again.
  std::optional<ApiResponse> refuse_early(const ApiRequest& head);

  // Whether this request's route streams its body, and the largest body it accepts.
  bool streams_body(const std::string& method, const std::string& path) const;
  std::uint64_t max_streamed_body() const;

  // For answers the edge gives itself (413 while reading a body).
  static ApiResponse error_response(int status, const std::string& message);
  // `path` is the request's path: the metrics label it by its route template, or `other`.
  void count(const std::string& method, const std::string& path, int status, std::chrono::steady_clock::duration took);

 private:
  // The route `method path` names (nullptr: none), whether any route has that path, its {params}.
  const RouteSpec* find_route(const std::string& method, const std::string& path, std::vector<std::string>& params,
                              bool& path_known) const;
  // 401/403 when the request's token does not allow the route; nullopt when it does.
  std::optional<ApiResponse> check_access(const RouteSpec& route, const ApiRequest& request) const;
  ApiResponse dispatch(const RouteSpec& route, const std::vector<std::string>& params, const ApiRequest& request);

  JobService& jobs_;
  ServerService& servers_;
  artifacts::UploadService& uploads_;
  const artifacts::ArtifactStore& artifacts_;
  Store& store_;
  Metrics& metrics_;
  const TokenAuthenticator& auth_;
  const Logger& log_;
  NamedRecipes* recipes_;  // null: the registry is off (no named recipes)
  NodeService* nodes_ = nullptr;
  FleetService* fleets_ = nullptr;
  BootService* boot_ = nullptr;
};

}  // namespace provisioner
