// Task ISO build for a 64 KiB payload, in process (build_task_iso) vs `xorriso -as mkisofs`
// on the same files, in the same run. Prints medians and the ratio.
//   iso_bench [--iterations N] [--xorriso-iterations M]
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "controller/iso/task_iso.hpp"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;
using namespace provisioner::iso;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct Stats {
  double median = 0, p10 = 0, p90 = 0;
};
Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))]; };
  return {at(0.5), at(0.1), at(0.9)};
}

// Exactly 64 KiB of recipe payload: 8 extra files of 7 KiB, 4 KiB user-data, 2 KiB each of
// kickstart and unattend.xml, plus a one-line network-config. (recipe.json carries the same
// strings again, so the ISO holds about twice the payload.)
TaskIsoInputs inputs_64k() {
  TaskIsoInputs in;
  in.job_id = "bench-job-0001";
  auto filler = [](std::size_t n, char seed) {
    std::string s(n, 'a');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + static_cast<std::size_t>(seed)) % 26);
    return s;
  };
  nlohmann::json files = nlohmann::json::array();
  for (int i = 0; i < 8; ++i)
    files.push_back({{"name", "etc/conf.d/file-" + std::to_string(i) + ".conf"}, {"content", filler(7 * 1024, static_cast<char>(i))}});
  in.recipe = {{"task_target", "provision-linux.target"},
               {"target_disk", "/dev/sda"},
               {"hostname", "bench-node"},
               {"user_data", "#cloud-config\n" + filler(4096 - 14, 'u')},
               {"network_config", "version: 2\n"},
               {"ks_cfg", filler(2048 - 11, 'k')},
               {"unattend_xml", "<unattend>" + filler(2048 - 21, 'w') + "</unattend>"},
               {"files", files}};
  in.job = {{"id", in.job_id}, {"webhook_url", "http://192.0.2.1/api/v1/status-webhook/B1"}, {"signing_key_id", "k1"}};
  return in;
}

int run_process(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  int iterations = 500, xorriso_iterations = 30;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--iterations")) iterations = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--xorriso-iterations")) xorriso_iterations = std::atoi(argv[i + 1]);
  }
  auto in = inputs_64k();
  auto files = task_files(in);
  if (!files) {
    std::fprintf(stderr, "bad inputs: %s\n", files.error().message.c_str());
    return 1;
  }
  std::size_t payload = 0, content = 0;
  for (const char* k : {"user_data", "network_config", "ks_cfg", "unattend_xml"})
    payload += in.recipe[k].get_ref<const std::string&>().size();
  for (const auto& f : in.recipe["files"]) payload += f["content"].get_ref<const std::string&>().size();
  for (const auto& f : *files) content += f.content.size();

  // In process. The first build pays libisofs initialisation; it is a warm-up, not a sample.
  std::size_t iso_size = build_task_iso(in)->size();
  std::vector<double> lib;
  for (int i = 0; i < iterations; ++i) {
    auto t0 = Clock::now();
    auto iso = build_task_iso(in);
    lib.push_back(ms_since(t0));
    if (!iso) return 1;
  }

  // The same files on disk for xorriso; output to a tmpfs-or-not temp dir, no fsync either way.
  fs::path dir = fs::temp_directory_path() / ("iso-bench-" + std::to_string(::getpid()));
  fs::create_directories(dir / "tree");
  for (const auto& f : *files) {
    fs::path p = dir / "tree" / f.path;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << f.content;
  }
  std::string out = (dir / "x.iso").string();
  std::vector<std::string> cmd = {"xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-iso-level", "3",
                                  "-V", "CIDATA", "-o", out, (dir / "tree").string()};
  std::vector<double> xo;
  if (run_process(cmd) != 0) {
    std::fprintf(stderr, "xorriso failed or is not installed\n");
  } else {
    for (int i = 0; i < xorriso_iterations; ++i) {
      auto t0 = Clock::now();
      run_process(cmd);
      xo.push_back(ms_since(t0));
    }
  }
  std::uintmax_t xo_size = fs::exists(out) ? fs::file_size(out) : 0;
  fs::remove_all(dir);

  auto l = stats(lib);
  std::printf("task ISO: recipe payload %zu bytes; %zu files on the ISO, %zu bytes of file content\n", payload,
              files->size(), content);
  std::printf("  in process (build_task_iso): median %.3f ms  p10 %.3f  p90 %.3f  (%d runs, ISO %zu bytes)\n",
              l.median, l.p10, l.p90, iterations, iso_size);
  if (!xo.empty()) {
    auto x = stats(xo);
    std::printf("  xorriso -as mkisofs:          median %.3f ms  p10 %.3f  p90 %.3f  (%d runs, ISO %ju bytes)\n",
                x.median, x.p10, x.p90, xorriso_iterations, xo_size);
    std::printf("  ratio xorriso / in process:   %.1fx\n", x.median / l.median);
  }
  std::printf("  goal <= 1 ms per ISO in process: %s\n", l.median <= 1.0 ? "met" : "NOT met");
  return 0;
}
