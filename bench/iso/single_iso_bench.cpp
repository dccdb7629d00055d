// What a single-ISO job's medium costs the controller, for a maintenance ISO of M MiB: the
// overlay (libisofs: new volume descriptors + the task as an appended session) and its
// registration as a composite of the shared base (ArtifactStore::put_composite), per job, as
// JobMediaBuilder does it. Compared in the same run with what the same medium cost when its
// id was the SHA-256 of all its bytes (reading the whole composite once per job: measured here
// with verify_composite, which reads and hashes every byte), and with `cp` of the base (what
// a copy per job would cost).
//   single_iso_bench [--base-mib M] [--jobs N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "controller/artifacts/artifact_store.hpp"
#include "controller/iso/task_iso.hpp"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace provisioner;

namespace {
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  int base_mib = 1024, jobs = 50;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--base-mib")) base_mib = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--jobs")) jobs = std::atoi(argv[i + 1]);
  }
  auto dir = fs::temp_directory_path() / ("single-iso-bench-" + std::to_string(::getpid()));
  fs::create_directories(dir / "root/boot");
  std::ofstream(dir / "root/boot/bios.img", std::ios::binary) << std::string(2048 * 4, '\x90');
  std::ofstream(dir / "root/boot/efi.img", std::ios::binary) << std::string(2048 * 16, '\0');
  {
    // Not sparse: a real maintenance ISO's bytes are on disk, and hashing reads them.
    std::ofstream payload(dir / "root/rootfs.img", std::ios::binary);
    std::string chunk(1 << 20, '\0');
    for (std::size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>((i * 131) & 0xff);
    for (int i = 0; i < base_mib; ++i) payload.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
  }
  auto base = dir / "maintenance.iso";
  std::string cmd = "xorriso -as mkisofs -quiet -R -J -V MAINT_OS -b boot/bios.img -no-emul-boot -boot-load-size 4 "
                    "-eltorito-alt-boot -e boot/efi.img -no-emul-boot -o '" + base.string() + "' '" + (dir / "root").string() + "'";
  if (std::system(cmd.c_str()) != 0) return 2;
  fs::remove(dir / "root/rootfs.img");
  artifacts::ArtifactStore store(dir / "store");
  auto stored = store.put_file(base);
  if (!stored) return 2;
  auto base_path = store.path_of(stored->sha256)->string();
  std::printf("maintenance ISO %.0f MiB, %d single-ISO jobs\n", static_cast<double>(fs::file_size(base)) / (1 << 20), jobs);

  std::vector<double> per_job, full_hash, overlay_ms;
  double first = 0;
  std::string last_id;
  for (int j = 0; j < jobs; ++j) {
    iso::TaskIsoInputs in;
    in.job_id = "bench-job-" + std::to_string(j);
    in.recipe = {{"task_target", "provision-linux.target"}, {"target_disk", "/dev/sda"}, {"hostname", "node-" + std::to_string(j)}};
    in.job = {{"id", in.job_id}, {"webhook_url", "http://192.0.2.1/api/v1/status-webhook/S" + std::to_string(j)}};
    auto t0 = Clock::now();
    auto overlay = iso::build_single_iso_overlay(base_path, in);
    if (!overlay) {
      std::fprintf(stderr, "overlay: %s\n", overlay.error().message.c_str());
      return 1;
    }
    if (j > 0) overlay_ms.push_back(ms_since(t0));
    std::vector<artifacts::CompositePart> parts;
    for (auto& seg : overlay->segments) {
      if (seg.kind == iso::IsoSegment::Kind::base_file)
        parts.push_back(artifacts::CompositePart::region(stored->sha256, seg.offset, seg.length));
      else
        parts.push_back(artifacts::CompositePart::bytes(std::move(seg.data)));
    }
    auto comp = store.put_composite(parts);
    if (!comp) {
      std::fprintf(stderr, "composite: %s\n", comp.error().message.c_str());
      return 1;
    }
    double ms = ms_since(t0);
    if (j == 0) first = ms;
    else per_job.push_back(ms);
    last_id = comp->sha256;
    if (j < 5) {  // the former cost: every byte of the composite read and hashed, per job
      auto t1 = Clock::now();
      if (auto ok = store.verify_composite(comp->sha256); !ok) {
        std::fprintf(stderr, "verify: %s\n", ok.error().message.c_str());
        return 1;
      }
      full_hash.push_back(ms_since(t1));
    }
  }
  auto t2 = Clock::now();
  std::string cp = "cp '" + base_path + "' '" + (dir / "copy.iso").string() + "' && sync";
  if (std::system(cp.c_str()) != 0) return 2;
  double copy_ms = ms_since(t2);
  std::printf("first job (hashes the base's region once, then keeps its digest): %.1f ms\n", first);
  std::printf("every later job: median %.2f ms (the overlay %.2f ms, the composite with its fsyncs the rest)\n",
              median(per_job), median(overlay_ms));
  std::printf("hashing the whole composite per job (the id as SHA-256 of all bytes): median %.1f ms (%.0fx)\n",
              median(full_hash), median(full_hash) / std::max(median(per_job), 0.001));
  std::printf("cp of the base (+ sync): %.1f ms (%.0fx)\n", copy_ms, copy_ms / std::max(median(per_job), 0.001));
  fs::remove_all(dir);
  return 0;
}
