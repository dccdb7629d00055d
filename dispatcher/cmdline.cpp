#include "dispatcher/cmdline.hpp"

namespace provisioner::dispatcher {

std::map<std::string, std::string> parse_kernel_cmdline(std::string_view text) {
  std::map<std::string, std::string> out;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n')) ++i;
    if (i >= text.size()) break;
    std::string word;
    bool quoted = false;
    for (; i < text.size(); ++i) {
      char c = text[i];
      if (c == '"') {
        quoted = !quoted;
        continue;
      }
      if (!quoted && (c == ' ' || c == '\t' || c == '\n')) break;
      word.push_back(c);
    }
    auto eq = word.find('=');
    if (eq == std::string::npos)
      out[word] = "";
    else
      out[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return out;
}

ProvisionCmdline provision_options(const std::map<std::string, std::string>& cmdline) {
  auto get = [&](const char* key) -> std::optional<std::string> {
    auto it = cmdline.find(key);
    if (it == cmdline.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
  return ProvisionCmdline{get("provision.task"), get("provision.sha256"), get("provision.controller"),
                          get("provision.serial"), get("provision.inspect"), get("provision.inspect_token")};
}

}  // namespace provisioner::dispatcher
