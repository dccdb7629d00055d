#pragma once
// Runs the controller's command-line parser on a list of arguments, as main() would.
#include <string>
#include <variant>
#include <vector>

#include "controller/config/config.hpp"

namespace provisioner::test {

// The SHA-256 of "test", a valid --admin-token-sha256 value.
inline constexpr const char* kTestTokenHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

inline std::variant<RunController, ExitWith> parse(std::vector<std::string> args) {
  args.insert(args.begin(), "provisioner-controller");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_command_line(static_cast<int>(argv.size()), argv.data());
}

}  // namespace provisioner::test
