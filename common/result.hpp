#pragma once
// Result<T>: the value-or-error type every module edge returns (std::expected is C++23).
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace provisioner {

// One problem with one field of an input document; `path` is a JSON pointer ("/image/digest").
struct FieldError {
  std::string path;
  std::string message;
  bool operator==(const FieldError&) const = default;
};

enum class ErrorKind {
  invalid_input,   // the caller sent something wrong (HTTP 400)
  not_found,       // 404
  conflict,        // the state does not allow it (409)
  unauthorized,    // 401
  forbidden,       // 403
  too_large,       // 413
  unavailable,     // a dependency failed (503)
  internal,        // a bug or an I/O failure (500)
};

struct Error {
  ErrorKind kind = ErrorKind::internal;
  std::string message;
  std::vector<FieldError> fields;  // for invalid_input: every bad field
};

// [[nodiscard]]: a dropped Result is a dropped error (LLVM's Expected aborts on it; here the
// compiler refuses it). Discard on purpose with `(void)`, and say why.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit on purpose
  Result(Error error) : v_(std::move(error)) {}      // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};
using Status = Result<Ok>;

inline Error make_error(ErrorKind kind, std::string message, std::vector<FieldError> fields = {}) {
  return Error{kind, std::move(message), std::move(fields)};
}

}  // namespace provisioner
