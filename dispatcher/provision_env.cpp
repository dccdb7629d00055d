#include "dispatcher/provision_env.hpp"

#include <sys/stat.h>

#include <cctype>

#include "common/atomic_file.hpp"
#include "common/crypto.hpp"
#include "common/recipe.hpp"
#include "dispatcher/http_client.hpp"

namespace provisioner::dispatcher {

namespace fs = std::filesystem;
using nlohmann::json;

std::string shell_quote(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'')
      out += "'\\''";
    else
      out.push_back(c);
  }
  out += "'";
  return out;
}

Result<std::map<std::string, std::string>> parse_env_text(std::string_view text) {
  std::map<std::string, std::string> out;
  std::size_t i = 0;
  auto bad = [](const std::string& why) { return make_error(ErrorKind::invalid_input, why); };
  while (i < text.size()) {
    while (i < text.size() && (text[i] == '\n' || text[i] == ' ' || text[i] == '\t')) ++i;
    if (i >= text.size()) break;
    if (text[i] == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
      continue;
    }
    auto eq = text.find('=', i);
    if (eq == std::string_view::npos) return bad("line without '='");
    std::string key(text.substr(i, eq - i));
    if (key.empty() || std::isdigit(static_cast<unsigned char>(key[0])) || key.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
                           std::string::npos)
      return bad("bad variable name");
    i = eq + 1;
    std::string value;
    while (i < text.size() && text[i] != '\n') {
      char c = text[i];
      if (c == '\'') {
        auto close = text.find('\'', i + 1);
        if (close == std::string_view::npos) return bad("unterminated quote for " + key);
        value.append(text.substr(i + 1, close - i - 1));  // may span lines
        i = close + 1;
      } else if (c == '\\' && i + 1 < text.size()) {
        value.push_back(text[i + 1]);
        i += 2;
      } else {
        value.push_back(c);
        ++i;
      }
    }
    out[key] = value;
  }
  return out;
}

namespace {

std::string str_at(const json& doc, const json::json_pointer& ptr, std::string fallback = {}) {
  return doc.contains(ptr) && doc.at(ptr).is_string() ? doc.at(ptr).get<std::string>() : fallback;
}

// host[:port] of an OCI reference ("reg:5000/ns/img:tag"), or "" for a Docker Hub short name.
std::string oci_registry(std::string_view ref) {
  auto slash = ref.find('/');
  if (slash == std::string_view::npos) return {};
  auto first = ref.substr(0, slash);
  if (first.find('.') == std::string_view::npos && first.find(':') == std::string_view::npos && first != "localhost")
    return {};
  return std::string(first);
}

void line(std::string& out, std::string_view key, std::string_view value) {
  out += std::string(key) + "=" + shell_quote(value) + "\n";
}

}  // namespace

std::string recipe_env_text(const Task& task) {
  const json& r = task.recipe;
  std::string out = "# Written by provisioner-dispatcher for job " + task.job_id + "; do not edit.\n";
  line(out, "JOB_ID", task.job_id);
  line(out, "RECIPE_NAME", str_at(r, "/name"_json_pointer));
  line(out, "TASK_TARGET", str_at(r, "/task_target"_json_pointer));
  line(out, "TARGET_DISK", str_at(r, "/target_disk"_json_pointer));
  line(out, "BOOT_MODE", str_at(r, "/boot_mode"_json_pointer, "uefi"));
  line(out, "MEDIA_MODE", str_at(r, "/media_mode"_json_pointer));
  line(out, "HOSTNAME", str_at(r, "/hostname"_json_pointer));
  auto oci = str_at(r, "/image/oci"_json_pointer);
  line(out, "IMAGE_OCI", oci);
  line(out, "IMAGE_URL", str_at(r, "/image/url"_json_pointer));
  line(out, "IMAGE_DIGEST", str_at(r, "/image/digest"_json_pointer));
  line(out, "IMAGE_FORMAT", str_at(r, "/image/format"_json_pointer, "rootfs-tar"));
  line(out, "FIRMWARE_URL", str_at(r, "/firmware_url"_json_pointer));
  std::string install_timeout;
  if (r.contains("/timeouts/install"_json_pointer))
    install_timeout = std::to_string(r.at("/timeouts/install"_json_pointer).get<long long>());
  line(out, "INSTALL_TIMEOUT", install_timeout);
  // The controller serves its own OCI registry (/v2/) from the same origin as the webhook. When
  // that origin is plain HTTP, the registry is too, and the image step must not insist on TLS
  // for it; any other registry keeps TLS verification.
  std::string tls_verify = "true";
  auto webhook = parse_url(task.webhook_url);
  if (webhook && webhook->scheme == "http" && !oci.empty() && oci_registry(oci) == webhook->host_header())
    tls_verify = "false";
  line(out, "REGISTRY_TLS_VERIFY", tls_verify);
  line(out, "PROVISION_DIR", "/run/provision");
  return out;
}

std::string registry_auth_json_text(const Task& task) {
  json auths = json::object();
  auto oci = str_at(task.recipe, "/image/oci"_json_pointer);
  auto host = oci_registry(oci);
  auto user_pass = str_at(task.recipe, "/secrets/registry_auth"_json_pointer);
  if (!host.empty() && !user_pass.empty()) auths[host] = {{"auth", crypto::base64_encode(user_pass)}};
  // The controller's own token wins for its own registry: it is what the job was granted.
  for (const auto& [registry, token] : task.registry_auth)
    auths[registry] = {{"auth", crypto::base64_encode("job:" + token)}};
  if (auths.empty()) return {};
  return json{{"auths", auths}}.dump() + "\n";
}

std::string layout_json_text(const Task& task) {
  const json& r = task.recipe;
  json layout;
  layout["disk"] = str_at(r, "/target_disk"_json_pointer);
  layout["boot_mode"] = str_at(r, "/boot_mode"_json_pointer, "uefi");
  if (r.contains("partition_layout") && !r["partition_layout"].empty()) {
    layout["partitions"] = r["partition_layout"];
  } else {
    layout["partitions"] = json::array(
        {{{"size", "512MiB"}, {"type_guid", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"}, {"format", "vfat"},
          {"label", "ESP"}, {"mountpoint", "/boot/efi"}},
         {{"size", "rest"}, {"type_guid", "0fc63daf-8483-4772-8e79-3d69d8477de4"}, {"format", "ext4"},
          {"label", "root"}, {"mountpoint", "/"}}});
  }
  return layout.dump(2) + "\n";
}

std::string webhook_env_text(const Task& task) {
  std::string out = "# Written by provisioner-dispatcher; secret, mode 0600.\n";
  line(out, "JOB_ID", task.job_id);
  line(out, "WEBHOOK_URL", task.webhook_url);
  line(out, "WEBHOOK_KEY_ID", task.signing_key_id);
  line(out, "WEBHOOK_KEY", task.signing_key);
  return out;
}

Status write_run_files(const Task& task, const fs::path& run_dir) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return make_error(ErrorKind::internal, "cannot create " + run_dir.string() + ": " + ec.message());
  ::chmod(run_dir.c_str(), 0755);
  auto put = [&](const fs::path& name, std::string_view bytes, mode_t mode) -> Status {
    fs::create_directories((run_dir / name).parent_path(), ec);
    return write_file_atomically(run_dir / name, bytes, mode);
  };
  // Secrets first and webhook.env last-but-one: a unit that sees recipe.env can rely on the rest.
  std::string secrets = "# Recipe secrets; mode 0600.\n";
  if (task.recipe.contains("secrets"))
    for (auto& [k, v] : task.recipe["secrets"].items()) line(secrets, k, v.get<std::string>());
  if (auto s = put("secrets.env", secrets, 0600); !s) return s;
  if (auto s = put("webhook.env", webhook_env_text(task), 0600); !s) return s;
  if (auto auth = registry_auth_json_text(task); !auth.empty()) {
    if (auto s = put("registry-auth.json", auth, 0600); !s) return s;
  } else {
    fs::remove(run_dir / "registry-auth.json", ec);  // never an earlier task's credentials
  }
  // The marker provision-reboot-after-success.service waits for (network-booted jobs).
  fs::remove(run_dir / "success-delivered", ec);  // never an earlier task's
  if (task.reboot_after_success) {
    if (auto s = put("reboot-after-success", "", 0644); !s) return s;
  } else {
    fs::remove(run_dir / "reboot-after-success", ec);
  }
  if (auto s = put("layout.json", layout_json_text(task), 0644); !s) return s;
  // recipe.json without its secrets: steps that need one read secrets.env.
  json visible = task.recipe;
  visible.erase("secrets");
  if (auto s = put("recipe.json", visible.dump(2) + "\n", 0644); !s) return s;

  // NoCloud and installer answer files: the medium's copy (the controller already put a per-job
  // instance-id into meta-data), else the recipe's text.
  struct Seed {
    const char* file;
    const char* recipe_key;
  };
  for (auto [file, key] : {Seed{"user-data", "user_data"}, Seed{"meta-data", "meta_data"},
                           Seed{"network-config", "network_config"}, Seed{"unattend.xml", "unattend_xml"},
                           Seed{"ks.cfg", "ks_cfg"}}) {
    auto from_medium = read_file(task.root / file);
    std::optional<std::string> content;
    if (from_medium)
      content = std::move(*from_medium);
    else if (task.recipe.contains(key))
      content = task.recipe[key].get<std::string>();
    else if (std::string_view(file) == "meta-data" && task.recipe.contains("user_data"))
      content = "instance-id: " + task.job_id + "\n";  // NoCloud needs both files
    if (content) {
      // user-data, unattend.xml and ks.cfg may hold passwords.
      mode_t mode = std::string_view(file) == "meta-data" || std::string_view(file) == "network-config" ? 0644 : 0600;
      if (auto s = put(file, *content, mode); !s) return s;
    } else {
      fs::remove(run_dir / file, ec);  // a stale file from an earlier task must not leak in
    }
  }

  if (task.recipe.contains("files")) {
    for (const auto& f : task.recipe["files"]) {
      auto name = f["name"].get<std::string>();
      std::string why;
      if (!is_safe_relative_name(name, &why))
        return make_error(ErrorKind::invalid_input, "unsafe file name in recipe: " + why);
      auto from_medium = read_file(task.root / "files" / name);
      std::string content = from_medium ? *from_medium : f["content"].get<std::string>();
      mode_t mode = 0644;
      if (f.contains("mode")) mode = static_cast<mode_t>(std::stoul(f["mode"].get<std::string>(), nullptr, 8));
      if (auto s = put(fs::path("files") / name, content, mode); !s) return s;
    }
  }
  return put("recipe.env", recipe_env_text(task), 0644);
}

Result<WebhookConfig> read_webhook_env(const fs::path& run_dir) {
  auto text = read_file(run_dir / "webhook.env");
  if (!text) return make_error(ErrorKind::not_found, "no " + (run_dir / "webhook.env").string());
  auto env = parse_env_text(*text);
  if (!env) return env.error();
  WebhookConfig c{(*env)["WEBHOOK_URL"], (*env)["WEBHOOK_KEY"], (*env)["WEBHOOK_KEY_ID"], (*env)["JOB_ID"]};
  if (c.url.empty() || c.key.empty() || c.job_id.empty())
    return make_error(ErrorKind::invalid_input, "webhook.env lacks WEBHOOK_URL, WEBHOOK_KEY or JOB_ID");
  return c;
}

}  // namespace provisioner::dispatcher
