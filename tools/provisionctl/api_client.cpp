#include "tools/provisionctl/api_client.hpp"

#include <cstdio>
#include <memory>
#include <thread>

#include "common/curl_handles.hpp"

namespace provisionctl {

namespace {

size_t append(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

std::string describe(long status, const std::string& body, std::vector<std::pair<std::string, std::string>>& fields) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) {
    if (j.contains("fields") && j["fields"].is_array())
      for (const auto& f : j["fields"])
        fields.emplace_back(f.value("path", ""), f.value("message", ""));
    return j["error"].get<std::string>();
  }
  return "HTTP " + std::to_string(status) + (body.empty() ? "" : ": " + body.substr(0, 200));
}

// The event stream's state across write callbacks.
struct Stream {
  std::string buffer, last_id;
  const std::function<bool(const std::string&, const std::string&, const nlohmann::json&)>* cb;
  bool done = false;
  bool got_bytes = false;
  // What the callback threw: never through libcurl's C frames, rethrown after the transfer.
  std::exception_ptr error;
};

// Splits the bytes into events and hands each to the callback; 0 (abort) once it says stop.
size_t stream_bytes(char* data, size_t size, size_t n, void* out) {
      auto* st = static_cast<Stream*>(out);
      st->got_bytes = true;
      st->buffer.append(data, size * n);
      std::size_t end;
      while ((end = st->buffer.find("\n\n")) != std::string::npos) {
        auto block = st->buffer.substr(0, end);
        st->buffer.erase(0, end + 2);
        std::string id, type = "message", payload;
        std::size_t start = 0;
        while (start < block.size()) {
          auto nl = block.find('\n', start);
          auto line = block.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
          start = nl == std::string::npos ? block.size() : nl + 1;
          if (line.starts_with("id: ")) id = line.substr(4);
          else if (line.starts_with("event: ")) type = line.substr(7);
          else if (line.starts_with("data: ")) payload += line.substr(6);
        }
        if (payload.empty()) continue;  // a comment (heartbeat) or the retry line
        if (!id.empty()) st->last_id = id;
        auto json = nlohmann::json::parse(payload, nullptr, false);
        bool more = false;
        try {
          more = (*st->cb)(id, type, json.is_discarded() ? nlohmann::json(payload) : json);
        } catch (...) {
          st->error = std::current_exception();
        }
        if (!more) {
          st->done = true;
          return 0;  // ends the transfer
        }
      }
      return size * n;
    }

}  // namespace

nlohmann::json Answer::json() const {
  auto j = nlohmann::json::parse(body, nullptr, false);
  return j.is_discarded() ? nlohmann::json() : j;
}

ApiError::ApiError(long s, std::string message, std::vector<std::pair<std::string, std::string>> f)
    : std::runtime_error(std::move(message)), status(s), fields(std::move(f)) {}

ApiClient::ApiClient(Context context) : context_(std::move(context)) {
  provisioner::curl::global_init_once();
  curl_ = curl_easy_init();
  if (!curl_) throw std::runtime_error("cannot initialise libcurl");
  while (!context_.url.empty() && context_.url.back() == '/') context_.url.pop_back();
}

ApiClient::~ApiClient() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

void* ApiClient::prepare(const std::string& method, const std::string& target) {
  auto* c = static_cast<CURL*>(curl_);
  curl_easy_reset(c);
  curl_easy_setopt(c, CURLOPT_URL, (context_.url + target).c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  if (!context_.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, context_.ca_file.c_str());
  if (context_.insecure) {
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  return c;
}

Answer ApiClient::request(const std::string& method, const std::string& target, const std::string& body,
                          const std::string& content_type) {
  auto* c = static_cast<CURL*>(prepare(method, target));
  provisioner::curl::SlistPtr headers;
  auto add = [&](const std::string& h) { headers.reset(curl_slist_append(headers.release(), h.c_str())); };
  if (!context_.token.empty()) add("Authorization: Bearer " + context_.token);
  add("Accept: application/json");
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    add("Content-Type: " + content_type);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 120000L);
  Answer a;
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &a.body);
  auto rc = curl_easy_perform(c);
  if (rc != CURLE_OK) throw Unreachable("cannot reach " + context_.url + ": " + curl_easy_strerror(rc));
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
  return a;
}

nlohmann::json ApiClient::call(const std::string& method, const std::string& target, const nlohmann::json& body) {
  auto a = request(method, target, body.is_null() ? std::string() : body.dump());
  if (a.status < 200 || a.status > 299) {
    std::vector<std::pair<std::string, std::string>> fields;
    auto message = describe(a.status, a.body, fields);
    throw ApiError(a.status, message, std::move(fields));
  }
  return a.body.empty() ? nlohmann::json::object() : a.json();
}

nlohmann::json ApiClient::upload(const std::string& target, const std::filesystem::path& file,
                                 const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  std::unique_ptr<FILE, int (*)(FILE*)> in(std::fopen(file.c_str(), "rb"), std::fclose);
  if (!in) throw std::runtime_error("cannot open " + file.string());
  auto size = std::filesystem::file_size(file);
  auto* c = static_cast<CURL*>(prepare("POST", target));
  provisioner::curl::SlistPtr headers;
  auto add = [&](const std::string& h) { headers.reset(curl_slist_append(headers.release(), h.c_str())); };
  if (!context_.token.empty()) add("Authorization: Bearer " + context_.token);
  add("Content-Type: application/octet-stream");
  add("Expect:");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "POST");
  curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(size));
  curl_easy_setopt(c, CURLOPT_READDATA, in.get());
  struct Progress {
    const std::function<void(std::uint64_t, std::uint64_t)>* cb;
  } p{&progress};
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &p);
  curl_xferinfo_callback on_progress = [](void* data, curl_off_t, curl_off_t, curl_off_t ultotal, curl_off_t ulnow) -> int {
    auto* pr = static_cast<Progress*>(data);
    if (*pr->cb && ultotal > 0) (*pr->cb)(static_cast<std::uint64_t>(ulnow), static_cast<std::uint64_t>(ultotal));
    return 0;
  };
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  Answer a;
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &a.body);
  auto rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status == 0) throw Unreachable("cannot reach " + context_.url + ": " + curl_easy_strerror(rc));
    throw std::runtime_error("upload to " + context_.url + " failed: " + curl_easy_strerror(rc));
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
  if (a.status < 200 || a.status > 299) {
    std::vector<std::pair<std::string, std::string>> fields;
    auto message = describe(a.status, a.body, fields);
    throw ApiError(a.status, message, std::move(fields));
  }
  return a.json();
}

void ApiClient::events(const std::string& query,
                       const std::function<bool(const std::string&, const std::string&, const nlohmann::json&)>& on_event) {
  Stream s;
  s.cb = &on_event;
  for (int attempt = 0; !s.done; ++attempt) {
    // A handle of its own: the callback may make API calls on the main one meanwhile.
    provisioner::curl::EasyPtr own(curl_easy_init());
    if (!own) throw std::runtime_error("cannot initialise libcurl");
    void* saved = curl_;
    curl_ = own.get();
    auto* c = static_cast<CURL*>(prepare("GET", "/api/v1/events" + (query.empty() ? "" : "?" + query)));
    curl_ = saved;
    provisioner::curl::SlistPtr headers;
    auto add = [&](const std::string& h) { headers.reset(curl_slist_append(headers.release(), h.c_str())); };
    if (!context_.token.empty()) add("Authorization: Bearer " + context_.token);
    add("Accept: text/event-stream");
    if (!s.last_id.empty()) add("Last-Event-ID: " + s.last_id);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    // No overall timeout: a heartbeat arrives every 15 s by default; five minutes of silence is
    // a dead stream (it is resumed from the last id).
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 300L);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_write_callback on_bytes = stream_bytes;
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_bytes);
    s.got_bytes = false;
    auto rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (s.error) std::rethrow_exception(s.error);
    if (s.done) return;
    if (s.got_bytes && status == 200) attempt = 0;  // it worked for a while: a fresh budget
    if (status != 0 && status != 200) {
      std::vector<std::pair<std::string, std::string>> fields;
      auto message = describe(status, s.buffer, fields);
      throw ApiError(status, message, std::move(fields));
    }
    if (attempt >= 30) {
      std::string why = std::string("the event stream keeps failing: ") + curl_easy_strerror(rc);
      if (status == 0) throw Unreachable("cannot reach " + context_.url + ": " + curl_easy_strerror(rc));
      throw std::runtime_error(why);
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));  // then resume from the last id
    s.buffer.clear();
  }
}

std::string url_encode(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : text) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += hex[ch >> 4];
      out += hex[ch & 15];
    }
  }
  return out;
}

}  // namespace provisionctl
