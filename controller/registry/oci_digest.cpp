#include "controller/registry/oci_digest.hpp"

#include <openssl/evp.h>

#include "common/crypto.hpp"

namespace provisioner::registry {

std::optional<Digest> parse_digest(std::string_view text) {
  auto colon = text.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto alg = text.substr(0, colon), hex = text.substr(colon + 1);
  std::size_t want = alg == "sha256" ? 64 : alg == "sha512" ? 128 : 0;
  if (want == 0 || hex.size() != want) return std::nullopt;
  for (char c : hex)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return std::nullopt;
  return Digest{std::string(alg), std::string(hex)};
}

struct Hasher::Ctx {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Ctx() { EVP_MD_CTX_free(ctx); }
};

Hasher::Hasher(std::string_view algorithm) : algorithm_(algorithm), ctx_(std::make_unique<Ctx>()) {
  EVP_DigestInit_ex(ctx_->ctx, algorithm_ == "sha512" ? EVP_sha512() : EVP_sha256(), nullptr);
}
Hasher::~Hasher() = default;
Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;

void Hasher::update(const void* data, std::size_t n) { EVP_DigestUpdate(ctx_->ctx, data, n); }

Digest Hasher::finish() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_->ctx, md, &len);
  return Digest{algorithm_ == "sha512" ? "sha512" : "sha256",
                crypto::to_hex(std::string_view(reinterpret_cast<char*>(md), len))};
}

Digest digest_of(std::string_view bytes, std::string_view algorithm) {
  Hasher h(algorithm);
  h.update(bytes);
  return h.finish();
}

}  // namespace provisioner::registry
