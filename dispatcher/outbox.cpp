#include "dispatcher/outbox.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <vector>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "dispatcher/http_client.hpp"

namespace provisioner::dispatcher {

namespace fs = std::filesystem;

WebhookOutbox::WebhookOutbox(fs::path dir, WebhookConfig config, const Clock& clock, SleepFn sleep, RetryPolicy policy)
    : dir_(std::move(dir)), config_(std::move(config)), clock_(clock), sleep_(std::move(sleep)), policy_(policy) {}

Result<fs::path> WebhookOutbox::enqueue(const WebhookReport& report) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return make_error(ErrorKind::internal, "cannot create " + dir_.string() + ": " + ec.message());
  // Names sort by creation time, so flushing in name order keeps the reports in order.
  char name[96];
  std::snprintf(name, sizeof name, "%016lld-%d-%s.json", static_cast<long long>(clock_.now_ms()),
                static_cast<int>(::getpid()), crypto::random_token(4).c_str());
  auto file = dir_ / name;
  if (auto w = write_file_atomically(file, to_json(report), 0600); !w) return w.error();
  return file;
}

WebhookOutbox::Attempt WebhookOutbox::deliver_once(const std::string& body, int timeout_ms) {
  std::int64_t ts = clock_.now_seconds() + offset_s_;
  HttpRequest req;
  req.method = "POST";
  req.url = config_.url;
  req.timeout_ms = timeout_ms;
  req.body = body;
  req.headers = {{"Content-Type", "application/json"},
                 {std::string(kWebhookTimestampHeader), std::to_string(ts)},
                 {std::string(kWebhookSignatureHeader), sign_webhook(config_.key, ts, body)}};
  auto resp = http_request(req);
  if (!resp) {
    std::cerr << "dispatcher: webhook to " << config_.url << " failed: " << resp.error().message << "\n";
    return Attempt::retry;
  }
  if (auto date = parse_http_date(resp->header("date")); date > 0) {
    // Only trust a big difference: a second or two is rounding and transit, not a bad clock.
    std::int64_t off = date - clock_.now_seconds();
    offset_s_ = (off > 5 || off < -5) ? off : 0;
  }
  int s = resp->status;
  if (s >= 200 && s < 300) return Attempt::delivered;
  std::cerr << "dispatcher: webhook answered " << s << "\n";
  // 401 may be a stale timestamp (now corrected from Date), 408/429/5xx are transient.
  if (s == 401 || s == 408 || s == 429 || s >= 500) return Attempt::retry;
  // 409: the controller already holds another outcome for this job (a replay cannot happen,
  // every try is re-signed). Other 4xx: the report itself is unacceptable. Retrying won't help.
  return Attempt::rejected;
}

namespace {

std::vector<fs::path> spooled_files(const fs::path& dir) {
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

FlushOutcome WebhookOutbox::flush(std::int64_t deadline_ms) {
  FlushOutcome out;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  int lock = ::open((dir_ / ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  // Another flusher delivers our file too; wait for it rather than sending everything twice.
  bool locked = lock < 0;  // no lock file possible (read-only run dir): go on without one
  while (!locked) {
    if (::flock(lock, LOCK_EX | LOCK_NB) == 0) {
      locked = true;
      break;
    }
    std::int64_t now = clock_.now_ms();
    if (now >= deadline_ms) break;
    sleep_(std::min<std::int64_t>(200, deadline_ms - now));
  }
  std::int64_t backoff = policy_.initial_backoff_ms;
  // The deadline bounds the whole loop: no attempt starts after it, and every attempt's own
  // deadline ends with it, so a controller that accepts and then trickles (or never answers)
  // cannot keep `report` or `flush` running past it.
  while (locked) {
    auto files = spooled_files(dir_);
    if (files.empty()) break;
    std::int64_t left = deadline_ms - clock_.now_ms();
    if (left <= 0) break;
    auto body = read_file(files.front());
    if (!body) {  // unreadable: set it aside rather than spin on it
      fs::create_directories(dir_ / "rejected", ec);
      fs::rename(files.front(), dir_ / "rejected" / files.front().filename(), ec);
      if (ec) fs::remove(files.front(), ec);
      ++out.rejected;
      continue;
    }
    int timeout = static_cast<int>(std::min<std::int64_t>(policy_.request_timeout_ms, left));
    auto result = deliver_once(*body, timeout);
    if (result == Attempt::delivered) {
      fs::remove(files.front(), ec);
      ++out.delivered;
      backoff = policy_.initial_backoff_ms;
      continue;
    }
    if (result == Attempt::rejected) {
      fs::create_directories(dir_ / "rejected", ec);
      fs::rename(files.front(), dir_ / "rejected" / files.front().filename(), ec);
      ++out.rejected;
      continue;
    }
    std::int64_t now = clock_.now_ms();
    if (now >= deadline_ms) break;
    sleep_(std::min(backoff, deadline_ms - now));
    backoff = std::min(backoff * 2, policy_.max_backoff_ms);
  }
  out.pending = static_cast<int>(spooled_files(dir_).size());
  if (lock >= 0) ::close(lock);  // releases the flock
  return out;
}

}  // namespace provisioner::dispatcher
