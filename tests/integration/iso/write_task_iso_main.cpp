// Test helper: writes the fixture task ISO (or a single-ISO built on a base) to a path, so
// tests can compare what separate processes with different TZ/umask produce.
//   iso_fixture_writer <out.iso> [job-id]
//   iso_fixture_writer --single <base.iso> <out.iso> [job-id]
#include <cstdio>
#include <string>

#include "tests/integration/iso/fixture_inputs.hpp"

int main(int argc, char** argv) {
  using namespace provisioner::iso;
  std::string a1 = argc > 1 ? argv[1] : "";
  if (a1 == "--single" && argc >= 4) {
    auto in = testing::fixture_inputs(argc > 4 ? argv[4] : "job-0001");
    auto overlay = build_single_iso_overlay(argv[2], in);
    if (!overlay) {
      std::fprintf(stderr, "%s\n", overlay.error().message.c_str());
      return 1;
    }
    auto s = materialize_single_iso(argv[2], *overlay, argv[3]);
    if (!s) {
      std::fprintf(stderr, "%s\n", s.error().message.c_str());
      return 1;
    }
    return 0;
  }
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <out.iso> [job-id] | --single <base.iso> <out.iso> [job-id]\n", argv[0]);
    return 2;
  }
  auto sha = write_task_iso(testing::fixture_inputs(argc > 2 ? argv[2] : "job-0001"), argv[1]);
  if (!sha) {
    std::fprintf(stderr, "%s\n", sha.error().message.c_str());
    for (const auto& f : sha.error().fields) std::fprintf(stderr, "  %s: %s\n", f.path.c_str(), f.message.c_str());
    return 1;
  }
  std::printf("%s\n", sha->c_str());
  return 0;
}
