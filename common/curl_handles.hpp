#pragma once
// What every outbound HTTP client here (the Redfish transport, the dispatcher's client, the
// vbmc's media fetcher) needs from libcurl around its transfers: one global initialisation and
// owning handles. Include it only from .cpp files that link CURL::libcurl.
#include <curl/curl.h>

#include <memory>
#include <mutex>

namespace provisioner::curl {

// libcurl's global state, set up once before the first handle.
inline void global_init_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct EasyDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

}  // namespace provisioner::curl
