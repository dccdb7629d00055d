// Inspection's inventory from a stand-in /proc and /sys.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "dispatcher/inventory.hpp"

namespace fs = std::filesystem;
using provisioner::dispatcher::collect_inventory;

namespace {
void put(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}
}  // namespace

TEST(Inventory, ReadsCpusMemoryPhysicalDisksAndNicsAndSmbios) {
  auto root = fs::temp_directory_path() / ("inventory-" + std::to_string(::getpid()));
  fs::remove_all(root);
  put(root / "proc/cpuinfo", "processor\t: 0\nmodel name\t: QEMU Virtual CPU\n\nprocessor\t: 1\nmodel name\t: QEMU Virtual CPU\n");
  put(root / "proc/meminfo", "MemTotal:        3145728 kB\nMemFree:  1 kB\n");
  put(root / "sys/block/vda/size", "12582912\n");
  put(root / "sys/block/vda/serial", "VDISK-1\n");
  put(root / "sys/block/vda/queue/rotational", "1\n");
  put(root / "sys/block/sda/size", "2048\n");
  put(root / "sys/block/vdb/size", "garbage\n");
  put(root / "sys/block/sda/device/model", "QEMU HARDDISK   \n");
  put(root / "sys/block/sda/device/serial", "QM0001\n");
  put(root / "sys/block/sda/queue/rotational", "0\n");
  for (const char* skip : {"loop0", "sr0", "zram0", "ram0", "dm-0"}) put(root / "sys/block" / skip / "size", "8\n");
  put(root / "sys/class/net/ens3/address", "52:54:00:12:34:56\n");
  put(root / "sys/class/net/ens3/type", "1\n");
  put(root / "sys/class/net/ib0/address", "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bb:cc\n");
  put(root / "sys/class/net/ib0/type", "32\n");
  fs::create_directories(root / "sys/class/net/ib0/device");
  fs::create_directories(root / "sys/class/net/ens3/device");
  put(root / "sys/class/net/lo/address", "00:00:00:00:00:00\n");
  put(root / "sys/class/net/br0/address", "aa:bb:cc:dd:ee:ff\n");  // no device: virtual
  put(root / "sys/class/dmi/id/product_serial", "E2E-PXE\n");
  put(root / "sys/class/dmi/id/product_uuid", "4c4c4544-0000-1000-8000-000000000001\n");
  put(root / "sys/class/dmi/id/sys_vendor", "QEMU\n");

  auto inv = collect_inventory(root);
  EXPECT_EQ(inv["cpus"], 2);
  EXPECT_EQ(inv["cpu_model"], "QEMU Virtual CPU");
  EXPECT_EQ(inv["memory_bytes"], 3145728LL * 1024);
  ASSERT_EQ(inv["disks"].size(), 3u) << inv.dump();
  EXPECT_EQ(inv["disks"][2]["name"], "vdb");
  EXPECT_EQ(inv["disks"][2]["size_bytes"], 0) << "an unreadable size is 0, not a crash";
  EXPECT_EQ(inv["disks"][0]["name"], "sda");
  EXPECT_EQ(inv["disks"][0]["size_bytes"], 2048 * 512);
  EXPECT_EQ(inv["disks"][0]["model"], "QEMU HARDDISK");
  EXPECT_EQ(inv["disks"][0]["serial"], "QM0001");
  EXPECT_EQ(inv["disks"][0]["rotational"], false);
  EXPECT_EQ(inv["disks"][1]["name"], "vda");
  EXPECT_EQ(inv["disks"][1]["size_bytes"], 12582912LL * 512);
  EXPECT_EQ(inv["disks"][1]["serial"], "VDISK-1");
  ASSERT_EQ(inv["nics"].size(), 1u) << inv.dump();
  EXPECT_EQ(inv["nics"][0]["mac"], "52:54:00:12:34:56");
  EXPECT_EQ(inv["smbios"]["serial"], "E2E-PXE");
  EXPECT_EQ(inv["smbios"]["uuid"], "4c4c4544-0000-1000-8000-000000000001");
  EXPECT_EQ(inv["smbios"]["vendor"], "QEMU");
  EXPECT_FALSE(inv["smbios"].contains("product"));
  fs::remove_all(root);
}
