#pragma once
// Who may open one more connection: a cap in total and one per client address. Shared by the
// artifact server and the API edge (controller/api/front_guard.cpp), so that a few hostile
// clients cannot take every connection of either.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

namespace provisioner::artifacts {

class ConnectionAdmission {
 public:
  // per_client 0: no per-address cap.
  void configure(std::size_t cap, std::size_t per_client) {
    std::lock_guard lock(mutex_);
    cap_ = cap;
    per_client_cap_ = per_client;
  }

  // Counts a new connection in (nullptr), or says why it is refused: `full` when at the cap.
  const char* admit(const std::string& client, const char* full) {
    std::lock_guard lock(mutex_);
    if (active_ >= cap_) return full;
    if (per_client_cap_ > 0) {
      auto& n = per_client_[client];
      if (n >= per_client_cap_) return "too many connections from this address";
      ++n;
    }
    ++active_;
    return nullptr;
  }

  // Counts a connection out; returns how many stay open.
  std::size_t release(const std::string& client) {
    std::lock_guard lock(mutex_);
    --active_;
    if (per_client_cap_ > 0) {
      auto it = per_client_.find(client);
      if (it != per_client_.end() && --it->second == 0) per_client_.erase(it);
    }
    return active_;
  }

  std::size_t active() const {
    std::lock_guard lock(mutex_);
    return active_;
  }
  std::size_t cap() const {
    std::lock_guard lock(mutex_);
    return cap_;
  }

  // The per-address key: the raw address bytes (IPv4-mapped IPv6 counts as the IPv4 address).
  static std::string client_key(const sockaddr_storage& peer) {
    if (peer.ss_family == AF_INET) {
      const auto& a = reinterpret_cast<const sockaddr_in&>(peer).sin_addr;
      return std::string(reinterpret_cast<const char*>(&a), sizeof a);
    }
    if (peer.ss_family == AF_INET6) {
      const auto& a = reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr;
      if (IN6_IS_ADDR_V4MAPPED(&a)) return std::string(reinterpret_cast<const char*>(&a) + 12, 4);
      return std::string(reinterpret_cast<const char*>(&a), sizeof a);
    }
    return {};
  }

 private:
  mutable std::mutex mutex_;
  std::size_t cap_ = 0, per_client_cap_ = 0, active_ = 0;
  std::unordered_map<std::string, std::size_t> per_client_;
};

}  // namespace provisioner::artifacts
