// The registry's parsers and its upload state machine on arbitrary input. The first byte picks
// what is fuzzed: a manifest, a request path with its query, or a sequence of upload operations
// checked against a model (whatever the order, a blob becomes visible only with the digest of
// exactly the bytes appended, in order).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>

#include "common/atomic_file.hpp"
#include "controller/registry/oci_digest.hpp"
#include "controller/registry/oci_manifest.hpp"
#include "controller/registry/oci_route.hpp"
#include "controller/registry/registry_store.hpp"

using namespace provisioner;
using namespace provisioner::registry;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void fuzz_manifest(std::string_view input) {
  auto ct = input.size() > 1 && input[0] & 1 ? std::optional<std::string_view>(kOciManifest) : std::nullopt;
  auto m = parse_manifest(input.substr(std::min<std::size_t>(1, input.size())), ct);
  if (!m) return;
  check(is_manifest_media_type(m->media_type));
  bool index = m->kind == ParsedManifest::Kind::index;
  check(index == (m->media_type == kOciIndex || m->media_type == kDockerList));
  check(index ? m->blobs.empty() : !m->blobs.empty() && m->manifests.empty());
  for (const auto& d : m->blobs) check(parse_digest(d.digest.str()).has_value());
  for (const auto& d : m->manifests) check(parse_digest(d.digest.str()).has_value());
}

void fuzz_route(std::string_view input) {
  auto q = input.find('?');
  auto r = parse_route(input.substr(0, q));
  using K = Route::Kind;
  if (r.kind == K::blob || r.kind == K::upload || r.kind == K::upload_start || r.kind == K::manifest ||
      r.kind == K::tags || r.kind == K::referrers)
    check(valid_repository_name(r.name));
  if (q != std::string_view::npos) (void)parse_query(input.substr(q + 1));
}

const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    auto base = std::filesystem::exists("/dev/shm") ? std::filesystem::path("/dev/shm") : std::filesystem::temp_directory_path();
    auto d = base / ("fuzz-oci-" + std::to_string(::getpid()));
    std::filesystem::remove_all(d);
    return d;
  }();
  return dir;
}

void fuzz_uploads(std::string_view input) {
  std::filesystem::remove_all(scratch());
  RegistryStore store(scratch() / "r", scratch() / "b", 1 << 16, std::chrono::seconds(1));
  check(store.open().ok());
  std::vector<std::string> ids;
  std::map<std::string, std::string> model;  // id → bytes appended so far
  std::size_t i = 0;
  auto byte = [&]() -> unsigned { return i < input.size() ? static_cast<unsigned char>(input[i++]) : 0u; };
  while (i < input.size()) {
    unsigned op = byte() % 4;
    if (op == 0 || ids.empty()) {
      auto id = store.start_upload("repo");
      ids.push_back(id);
      model[id];
      continue;
    }
    const auto& id = ids[byte() % ids.size()];
    bool live = model.count(id) > 0;
    if (op == 1) {
      std::size_t n = byte() % 64;
      std::string chunk(input.substr(std::min(i, input.size()), n));
      i += chunk.size();
      unsigned skew = byte() % 4;  // 0: the right offset; else off by a little
      std::uint64_t at = live ? model[id].size() + (skew == 0 ? 0 : skew == 1 ? 1 : 0) : 0;
      std::optional<std::uint64_t> offset = skew == 3 ? std::nullopt : std::optional<std::uint64_t>(at);
      std::size_t pos = 0;
      auto read = [&](char* buf, std::size_t cap) -> Result<std::size_t> {
        auto k = std::min(cap, chunk.size() - pos);
        std::memcpy(buf, chunk.data() + pos, k);
        pos += k;
        return k;
      };
      auto r = store.append_upload("repo", id, offset, read, 1 << 20);
      if (!live) {
        check(std::holds_alternative<RegistryError>(r));
      } else if (skew == 1) {
        check(std::holds_alternative<RegistryError>(r) &&
              std::get<RegistryError>(r).code == RegistryErrorCode::range_invalid);
      } else {
        check(std::holds_alternative<std::uint64_t>(r));
        model[id] += chunk;
        check(std::get<std::uint64_t>(r) == model[id].size());
      }
    } else if (op == 2) {
      bool honest = byte() % 2;
      auto expected = live && honest ? digest_of(model[id]) : digest_of("not this " + std::to_string(i));
      auto r = store.finish_upload("repo", id, expected);
      if (live && honest) {
        check(std::holds_alternative<BlobInfo>(r));
        auto info = store.blob("repo", expected);
        check(info.has_value());
        check(*read_file(info->path) == model[id]);
      } else {
        check(std::holds_alternative<RegistryError>(r));
        if (!(live && digest_of(model[id]) == expected)) check(!store.blob("repo", expected).has_value());
      }
      model.erase(id);
    } else {
      check(store.cancel_upload("repo", id) == live);
      model.erase(id);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: fuzz_manifest(input); break;
    case 1: fuzz_route(input); break;
    default: fuzz_uploads(input.substr(0, 2048)); break;
  }
  return 0;
}
