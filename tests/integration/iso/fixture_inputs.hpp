#pragma once
// Fixed task ISO inputs shared by the integration tests and their helper executable, so two
// processes can be compared byte for byte.
#include <string>

#include <nlohmann/json.hpp>

#include "controller/iso/task_iso.hpp"

namespace provisioner::iso::testing {

inline TaskIsoInputs fixture_inputs(const std::string& job_id = "job-0001") {
  TaskIsoInputs in;
  in.job_id = job_id;
  in.recipe = {
      {"task_target", "provision-linux.target"},
      {"target_disk", "/dev/sda"},
      {"hostname", "node-17.example.net"},
      {"image", {{"oci", "registry.example.net/os/ubuntu:24.04"}}},
      {"user_data", "#cloud-config\npackages: [htop]\n"},
      {"network_config", "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"},
      {"ks_cfg", "text\nreboot\n"},
      {"files", nlohmann::json::array({
                    {{"name", "etc/motd"}, {"content", "welcome\n"}},
                    {{"name", "a-rather-long-file-name-that-needs-rock-ridge.conf"}, {"content", "x=1\n"}},
                    {{"name", "deep/er/still/file.txt"}, {"content", "deep\n"}},
                })},
  };
  in.job = {{"id", job_id},
            {"webhook_url", "http://192.0.2.10:8080/api/v1/status-webhook/SER123"},
            {"signing_key_id", "k1"},
            {"signing_key", "00112233445566778899aabbccddeeff"}};
  return in;
}

}  // namespace provisioner::iso::testing
