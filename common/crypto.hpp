#pragma once
// Thin wrappers over OpenSSL: digests, HMAC, randomness, authenticated encryption.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace provisioner::crypto {

std::string to_hex(std::string_view bytes);
std::optional<std::string> from_hex(std::string_view hex);
// RFC 4648 base64 with padding (HTTP Basic credentials); decode: nullopt when malformed.
std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);

std::string sha256(std::string_view data);             // raw 32 bytes
std::string sha256_hex(std::string_view data);         // lowercase hex
std::string hmac_sha256_hex(std::string_view key, std::string_view data);
bool is_sha256_hex(std::string_view s);  // exactly 64 lowercase hex digits

// Cryptographically random bytes; `random_token` gives URL-safe hex of `bytes` bytes.
std::string random_bytes(std::size_t n);
std::string random_token(std::size_t bytes = 32);

// Compares without leaking where the first difference is.
bool constant_time_equal(std::string_view a, std::string_view b);

// AES-256-GCM with a 32-byte key: output is nonce(12) | ciphertext | tag(16), hex encoded,
// so sealed values can sit in text columns. `open` returns nullopt when tampered with.
std::string seal(std::string_view key, std::string_view plaintext);
std::optional<std::string> open(std::string_view key, std::string_view sealed_hex);

}  // namespace provisioner::crypto
