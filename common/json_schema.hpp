#pragma once
// JSON Schema (draft-07) validation through valijson, reporting every problem as a
// FieldError with a JSON-pointer path.
#include <memory>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/result.hpp"

namespace provisioner {

// Parses JSON text, refusing nesting deeper than `max_depth` before it can exhaust a stack.
Result<nlohmann::json> parse_json(std::string_view text, int max_depth = 64);

class JsonSchema {
 public:
  // Throws std::invalid_argument when `schema_text` is not a usable draft-07 schema.
  explicit JsonSchema(std::string_view schema_text);
  ~JsonSchema();
  JsonSchema(JsonSchema&&) noexcept;
  JsonSchema& operator=(JsonSchema&&) noexcept;

  // Thread-safe. Empty when `document` conforms.
  std::vector<FieldError> validate(const nlohmann::json& document) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace provisioner
