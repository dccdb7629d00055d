#pragma once
// OCI content digests ("sha256:<64 hex>", "sha512:<128 hex>") and a streaming hasher for them.
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace provisioner::registry {

struct Digest {
  std::string algorithm;  // "sha256" | "sha512"
  std::string hex;        // lowercase, 64 or 128 digits
  std::string str() const { return algorithm + ":" + hex; }
  bool operator==(const Digest&) const = default;
  bool operator<(const Digest& o) const { return str() < o.str(); }
};

// Only the registered algorithms the spec names are accepted, in canonical (lowercase) form;
// nullopt otherwise (the caller answers DIGEST_INVALID, or NAME/route errors).
std::optional<Digest> parse_digest(std::string_view text);

class Hasher {
 public:
  explicit Hasher(std::string_view algorithm);  // "sha256" or "sha512"
  ~Hasher();
  Hasher(Hasher&&) noexcept;
  Hasher& operator=(Hasher&&) noexcept;
  void update(const void* data, std::size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  Digest finish();  // once
  const std::string& algorithm() const { return algorithm_; }

 private:
  struct Ctx;
  std::string algorithm_;
  std::unique_ptr<Ctx> ctx_;
};

Digest digest_of(std::string_view bytes, std::string_view algorithm = "sha256");

}  // namespace provisioner::registry
