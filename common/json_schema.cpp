#include "common/json_schema.hpp"

#include <mutex>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

namespace provisioner {

Result<nlohmann::json> parse_json(std::string_view text, int max_depth) {
  // nlohmann's parser is iterative but valijson and our own walkers recurse: cap depth first.
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') {
      if (++depth > max_depth)
        return make_error(ErrorKind::invalid_input, "malformed JSON: nested too deeply",
                          {{"", "nesting deeper than " + std::to_string(max_depth)}});
    } else if (c == '}' || c == ']') --depth;
  }
  auto doc = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded())
    return make_error(ErrorKind::invalid_input, "malformed JSON", {{"", "the body is not valid JSON"}});
  return doc;
}

namespace {

// A copy of the schema without "pattern": validating with it first enforces every maxLength,
// so the std::regex pass (recursive in libstdc++) only ever sees short strings.
nlohmann::json without_patterns(const nlohmann::json& schema) {
  if (schema.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (auto it = schema.begin(); it != schema.end(); ++it) {
      if (it.key() == "pattern") continue;
      out[it.key()] = without_patterns(it.value());
    }
    return out;
  }
  if (schema.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& v : schema) out.push_back(without_patterns(v));
    return out;
  }
  return schema;
}

// valijson context ["<root>", "[image]", "[0]"] → "/image/0" (JSON pointer, escaped).
std::string pointer_from_context(const std::vector<std::string>& context) {
  std::string out;
  for (const auto& part : context) {
    if (part == "<root>") continue;
    std::string token = part;
    if (token.size() >= 2 && token.front() == '[' && token.back() == ']')
      token = token.substr(1, token.size() - 2);
    std::string escaped;
    for (char c : token) {
      if (c == '~') escaped += "~0";
      else if (c == '/') escaped += "~1";
      else escaped += c;
    }
    out += "/" + escaped;
  }
  return out;
}

// Missing/unknown properties are reported on the parent; point at the property itself.
std::string refine_path(std::string path, const std::string& message) {
  for (const char* lead : {"Missing required property '",
                           "Object contains a property that could not be validated using "
                           "'properties' or 'additionalProperties' constraints: '"}) {
    auto pos = message.find(lead);
    if (pos == std::string::npos) continue;
    auto start = pos + std::string(lead).size();
    auto end = message.find('\'', start);
    if (end != std::string::npos) return path + "/" + message.substr(start, end - start);
  }
  return path;
}

// Messages valijson adds for a failed combinator, which say nothing on their own when the
// reasons are reported too.
bool is_summary(const std::string& message) {
  return message.rfind("Failed to validate against schema associated with property name", 0) == 0 ||
         message.rfind("Failed to validate item #", 0) == 0 ||
         message.rfind("Failed to match against any child schemas", 0) == 0 ||
         message.rfind("Failed to validate against child schema #", 0) == 0;
}

}  // namespace

struct JsonSchema::Impl {
  nlohmann::json length_doc, full_doc;
  valijson::Schema length_schema, full_schema;
  mutable std::mutex mutex;  // valijson::Validator caches compiled regexes in a plain map
  mutable valijson::Validator validator;

  static void load(const nlohmann::json& doc, valijson::Schema& schema) {
    valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
    valijson::adapters::NlohmannJsonAdapter adapter(doc);
    parser.populateSchema(adapter, schema);
  }

  std::vector<FieldError> run(const valijson::Schema& schema, const nlohmann::json& doc) const {
    valijson::ValidationResults results;
    valijson::adapters::NlohmannJsonAdapter target(doc);
    {
      std::lock_guard lock(mutex);
      validator.validate(schema, target, &results);
    }
    std::vector<FieldError> errors, summaries;
    std::set<std::pair<std::string, std::string>> seen;
    valijson::ValidationResults::Error e;
    while (results.popError(e)) {
      FieldError fe{refine_path(pointer_from_context(e.context), e.description), e.description};
      if (!seen.insert({fe.path, fe.message}).second) continue;
      (is_summary(e.description) ? summaries : errors).push_back(std::move(fe));
    }
    return errors.empty() ? summaries : errors;
  }
};

JsonSchema::JsonSchema(std::string_view schema_text) : impl_(std::make_unique<Impl>()) {
  auto doc = nlohmann::json::parse(schema_text.begin(), schema_text.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) throw std::invalid_argument("schema is not a JSON object");
  impl_->full_doc = std::move(doc);
  impl_->length_doc = without_patterns(impl_->full_doc);
  try {
    Impl::load(impl_->full_doc, impl_->full_schema);
    Impl::load(impl_->length_doc, impl_->length_schema);
  } catch (const std::exception& e) {
    throw std::invalid_argument(std::string("schema not usable: ") + e.what());
  }
}

JsonSchema::~JsonSchema() = default;
JsonSchema::JsonSchema(JsonSchema&&) noexcept = default;
JsonSchema& JsonSchema::operator=(JsonSchema&&) noexcept = default;

std::vector<FieldError> JsonSchema::validate(const nlohmann::json& document) const {
  auto errors = impl_->run(impl_->length_schema, document);
  for (const auto& e : errors)
    if (e.message.rfind("String should be no more than", 0) == 0) return errors;  // unsafe for regex
  return impl_->run(impl_->full_schema, document);
}

}  // namespace provisioner
