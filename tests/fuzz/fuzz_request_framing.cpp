// The API edge's framing checks on arbitrary bytes. Every client of the API reaches them
// before authentication; besides not crashing, they must never accept a head that two
// parsers could frame differently.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "controller/api/request_framing.hpp"

using namespace provisioner;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool contains_ci(std::string_view hay, std::string_view needle) {
  std::string h(hay), n(needle);
  for (auto& c : h) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return h.find(n) != std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto end = input.find("\r\n\r\n");
  if (end != std::string_view::npos) {
    auto head = input.substr(0, end + 4);
    auto result = check_request_head(head);
    if (const auto* f = std::get_if<Framing>(&result)) {
      // An accepted head has no NUL, no bare CR or LF, and not both framings.
      check(head.find('\0') == std::string_view::npos);
      for (std::size_t i = 0; i < head.size(); ++i) {
        if (head[i] == '\n') check(i > 0 && head[i - 1] == '\r');
        if (head[i] == '\r') check(i + 1 < head.size() && head[i + 1] == '\n');
      }
      check(!(contains_ci(head, "\r\ncontent-length:") && contains_ci(head, "\r\ntransfer-encoding:")));
      if (f->kind == Framing::kChunked) check(contains_ci(head, "chunked"));
      if (f->kind == Framing::kLength) check(f->length > 0 && contains_ci(head, "content-length"));
    } else {
      const auto& r = std::get<EdgeRefusal>(result);
      check(r.status == 400 || r.status == 501 || r.status == 505);
      check(r.why != nullptr && r.reason != nullptr);
    }
  }
  auto eol = input.find("\r\n");
  if (auto n = parse_chunk_size(input.substr(0, eol))) check(*n < (std::uint64_t{1} << 60));
  return 0;
}
