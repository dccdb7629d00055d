#pragma once
// Shell tools the media tests drive (xorriso, isoinfo, blkid, curl), and a test maintenance ISO.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace provisioner::test {

inline std::string run(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

// A bootable-looking base ISO: El Torito BIOS + EFI entries with small fake images.
inline std::filesystem::path make_maintenance_iso(const std::filesystem::path& dir) {
  auto root = dir / "maint-root";
  std::filesystem::create_directories(root / "boot");
  std::ofstream(root / "boot/bios.img", std::ios::binary) << std::string(2048 * 4, '\x90');
  std::ofstream(root / "boot/efi.img", std::ios::binary) << std::string(2048 * 16, '\x00');
  std::ofstream(root / "README.txt") << "maintenance OS (test)\n";
  auto iso = dir / "maintenance.iso";
  run("xorriso -as mkisofs -quiet -R -J -V MAINT_OS -b boot/bios.img -no-emul-boot -boot-load-size 4 "
      "-eltorito-alt-boot -e boot/efi.img -no-emul-boot -o '" + iso.string() + "' '" + root.string() + "' 2>&1");
  return iso;
}

}  // namespace provisioner::test
