#include "controller/api/auth.hpp"

#include "common/crypto.hpp"

namespace provisioner {

std::optional<Role> parse_role(std::string_view text) {
  if (text == "admin") return Role::admin;
  if (text == "operator") return Role::operator_;
  if (text == "auditor") return Role::auditor;
  if (text == "ci") return Role::ci;
  return std::nullopt;
}

std::string_view to_string(Role role) {
  switch (role) {
    case Role::admin: return "admin";
    case Role::operator_: return "operator";
    case Role::auditor: return "auditor";
    case Role::ci: return "ci";
  }
  return "unknown";
}

bool role_allows(Role role, Permission p) {
  switch (p) {
    case Permission::open:
    case Permission::webhook: return true;
    case Permission::read: return true;  // every role may read
    case Permission::submit: return role == Role::admin || role == Role::operator_ || role == Role::ci;
    case Permission::operate: return role == Role::admin || role == Role::operator_;
    case Permission::administer: return role == Role::admin;
  }
  return false;
}

TokenAuthenticator::TokenAuthenticator(const std::vector<ApiToken>& tokens) {
  for (const auto& t : tokens) by_hash_[t.sha256_hex] = t;
}

std::optional<ApiToken> TokenAuthenticator::authenticate(std::string_view authorization) const {
  constexpr std::string_view scheme = "Bearer ";
  if (authorization.size() <= scheme.size() || authorization.substr(0, scheme.size()) != scheme) return std::nullopt;
  auto token = authorization.substr(scheme.size());
  // Looking up the hash (not the token) keeps the comparison independent of the secret.
  auto it = by_hash_.find(crypto::sha256_hex(token));
  if (it == by_hash_.end()) return std::nullopt;
  return it->second;
}

}  // namespace provisioner
