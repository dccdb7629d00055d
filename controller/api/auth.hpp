#pragma once
// Bearer-token authentication and role checks. Only SHA-256 hashes of tokens are held: the
// config carries hashes, never the tokens themselves.
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace provisioner {

enum class Role { admin, operator_, auditor, ci };

// What a route needs. `open` routes need nothing; `webhook` routes carry their own HMAC.
enum class Permission { open, webhook, read, submit, operate, administer };

struct ApiToken {
  std::string name;
  Role role = Role::auditor;
  std::string sha256_hex;  // of the token text
};

std::optional<Role> parse_role(std::string_view text);
std::string_view to_string(Role role);
bool role_allows(Role role, Permission permission);

class TokenAuthenticator {
 public:
  explicit TokenAuthenticator(const std::vector<ApiToken>& tokens);
  // `authorization` is the whole header value ("Bearer <token>"); nullopt when unknown.
  std::optional<ApiToken> authenticate(std::string_view authorization) const;

 private:
  std::unordered_map<std::string, ApiToken> by_hash_;
};

}  // namespace provisioner
