#pragma once
// Fetches a virtual-media URL the way a real BMC does: HEAD for the size and validators,
// then Range GETs streamed into a local cache file, which QEMU then opens as the medium.
// Files are cached by (URL, ETag, Last-Modified, size), so re-inserting the same maintenance
// ISO for the next job costs one HEAD. Only http:// is supported (https is optional for BMCs
// on a lab network and the controller serves both). HTTP is libcurl's: one handle per fetch,
// so the HEAD and the Range GETs share a kept-alive connection when the server allows; a
// connect that takes over 30 s or an answer stalled for 30 s fails the fetch.
#include <cstdint>
#include <filesystem>
#include <string>

#include "common/result.hpp"

namespace provisioner {
class Logger;
}

namespace provisioner::vbmc {

struct FetchedMedia {
  std::filesystem::path file;
  std::uint64_t size = 0;
  bool from_cache = false;
  int range_requests = 0;  // GETs issued for this fetch (0 when cached)
};

struct HttpUrl {
  std::string host;
  std::uint16_t port = 80;
  std::string target = "/";
};
// "http://10.0.2.2:8080/a/b.iso" -> host, port, target. False for anything else.
bool parse_http_url(const std::string& url, HttpUrl& out);

class MediaFetcher {
 public:
  MediaFetcher(std::filesystem::path cache_dir, std::int64_t chunk_bytes, const Logger* logger);
  Result<FetchedMedia> fetch(const std::string& url) const;

 private:
  std::filesystem::path cache_dir_;
  std::int64_t chunk_bytes_;
  const Logger* logger_;
};

}  // namespace provisioner::vbmc
