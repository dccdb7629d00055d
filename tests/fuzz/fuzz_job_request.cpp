// The POST /jobs envelope schema on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/json_schema.hpp"
#include "common/recipe.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const provisioner::JsonSchema schema(provisioner::job_request_schema_text());
  auto doc = provisioner::parse_json(std::string_view(reinterpret_cast<const char*>(data), size));
  if (doc) (void)schema.validate(*doc);
  return 0;
}
