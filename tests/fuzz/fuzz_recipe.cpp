// Recipe parser + validator + redaction on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/recipe.hpp"
#include "common/redact.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const provisioner::RecipeValidator validator;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto recipe = validator.parse(text);
  if (recipe) (void)provisioner::redact(*recipe).dump();
  (void)provisioner::redact_text(text);
  return 0;
}
