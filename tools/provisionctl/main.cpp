// provisionctl: the provisioner's command line. One binary talking to the controller's API:
// servers, jobs (submit, watch with a live progress line), fleets (run with a live table),
// recipes, artifacts (streamed uploads, digest checked), nodes. Human output by default,
// `-o json` for scripts; colours only on a terminal. The token comes from PROVISIONER_TOKEN
// or the config file's current context (~/.config/provisioner/config.toml), never a flag.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <openssl/evp.h>
#include <toml++/toml.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "common/crypto.hpp"
#include "tools/provisionctl/api_client.hpp"

using nlohmann::json;
using namespace provisionctl;

namespace {

// Exit codes: 0 ok (or the job/fleet succeeded), 1 the API refused or the job/fleet failed,
// 2 usage, 3 the controller could not be reached, 4 canceled.
constexpr int kExitFailed = 1, kExitUsage = 2, kExitUnreachable = 3, kExitCanceled = 4;

struct Output {
  bool json = false;
  bool color = false;
  std::string paint(const std::string& text, const char* code) const {
    return color ? std::string("\033[") + code + "m" + text + "\033[0m" : text;
  }
  std::string status(const std::string& s) const {
    if (s == "complete" || s == "succeeded" || s == "installed" || s == "active") return paint(s, "32");
    if (s == "failed" || s == "canceled") return paint(s, "31");
    if (s == "provisioning" || s == "running" || s == "installing") return paint(s, "33");
    return s;
  }
};

std::string text_of(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

// A table with columns sized to their widest cell.
void print_table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows,
                 std::ostream& out = std::cout) {
  std::vector<std::size_t> width(head.size());
  auto visible = [](const std::string& s) {  // without colour escapes
    std::size_t n = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\033') {
        while (i < s.size() && s[i] != 'm') ++i;
        continue;
      }
      ++n;
    }
    return n;
  };
  for (std::size_t c = 0; c < head.size(); ++c) width[c] = head[c].size();
  for (const auto& r : rows)
    for (std::size_t c = 0; c < r.size() && c < width.size(); ++c) width[c] = std::max(width[c], visible(r[c]));
  auto line = [&](const std::vector<std::string>& r) {
    for (std::size_t c = 0; c < r.size(); ++c) {
      out << r[c];
      if (c + 1 < r.size()) out << std::string(width[c] - visible(r[c]) + 2, ' ');
    }
    out << "\n";
  };
  line(head);
  for (const auto& r : rows) line(r);
}

std::string read_text(const std::string& path) {
  if (path == "-") {
    std::stringstream s;
    s << std::cin.rdbuf();
    return s.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CLI::ValidationError("cannot read " + path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// YAML is a superset of JSON: one parser reads both, into JSON.
json yaml_to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = yaml_to_json(kv.second);
      return o;
    }
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& v : n) a.push_back(yaml_to_json(v));
      return a;
    }
    case YAML::NodeType::Scalar: {
      auto s = n.as<std::string>();
      if (n.Tag() == "!") return s;  // quoted: a string
      if (s == "true") return true;
      if (s == "false") return false;
      if (s == "null" || s == "~") return nullptr;
      char* end = nullptr;
      long long v = std::strtoll(s.c_str(), &end, 10);
      if (!s.empty() && end && *end == '\0') return v;
      return s;
    }
    default: return nullptr;
  }
}

json read_document(const std::string& path) {
  auto text = read_text(path);
  auto j = json::parse(text, nullptr, false);
  if (!j.is_discarded()) return j;
  try {
    return yaml_to_json(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    throw CLI::ValidationError(path + " is neither JSON nor YAML: " + e.what());
  }
}

// SHA-256 of bytes [start, start + length) of a file.
std::string sha256_range(const std::string& path, std::uint64_t start, std::uint64_t length) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CLI::ValidationError("cannot read " + path);
  in.seekg(static_cast<std::streamoff>(start));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  while (length > 0 && in) {
    in.read(buf.data(), static_cast<std::streamsize>(std::min<std::uint64_t>(length, buf.size())));
    auto n = in.gcount();
    if (n <= 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(n));
    length -= static_cast<std::uint64_t>(n);
  }
  if (length != 0) throw std::runtime_error(path + " is shorter than the artifact");
  unsigned char md[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  return provisioner::crypto::to_hex(std::string_view(reinterpret_cast<char*>(md), len));
}

std::string bar(double fraction, int width = 30) {
  int filled = static_cast<int>(fraction * width + 0.5);
  filled = std::clamp(filled, 0, width);
  return "[" + std::string(static_cast<std::size_t>(filled), '#') + std::string(static_cast<std::size_t>(width - filled), '.') + "]";
}

// The context: flags, then the environment, then the config file's (current) context.
Context load_context(const std::string& config_path, const std::string& wanted, const std::string& url_flag,
                     bool insecure) {
  Context c;
  std::string path = config_path;
  if (path.empty()) {
    if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg) path = std::string(xdg) + "/provisioner/config.toml";
    else if (const char* home = std::getenv("HOME")) path = std::string(home) + "/.config/provisioner/config.toml";
  }
  std::string name = wanted;
  if (name.empty())
    if (const char* env = std::getenv("PROVISIONER_CONTEXT")) name = env;
  if (!path.empty() && std::filesystem::exists(path)) {
    toml::table file;
    try {
      file = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
      throw CLI::ValidationError(path + ": " + std::string(e.description()));
    }
    if (name.empty()) name = file["current_context"].value_or(std::string());
    if (!name.empty()) {
      auto* ctx = file["contexts"][name].as_table();
      if (!ctx) throw CLI::ValidationError("no context '" + name + "' in " + path);
      c.name = name;
      c.url = (*ctx)["url"].value_or(std::string());
      c.token = (*ctx)["token"].value_or(std::string());
      if (auto tf = (*ctx)["token_file"].value<std::string>()) {
        std::ifstream in(*tf);
        std::getline(in, c.token);
      }
      c.ca_file = (*ctx)["ca_file"].value_or(std::string());
      c.insecure = (*ctx)["insecure"].value_or(false);
    }
  } else if (!wanted.empty()) {
    throw CLI::ValidationError("no config file " + path + " for context '" + wanted + "'");
  }
  if (const char* env = std::getenv("PROVISIONER_URL"); env && *env) c.url = env;
  if (const char* env = std::getenv("PROVISIONER_TOKEN"); env && *env) c.token = env;
  if (!url_flag.empty()) c.url = url_flag;
  if (insecure) c.insecure = true;
  if (c.url.empty()) c.url = "http://127.0.0.1:8080";
  return c;
}

void print_json(const json& j) { std::cout << j.dump(2) << "\n"; }

void print_server(const Output& o, const json& s) {
  if (o.json) return print_json(s);
  std::cout << "id:       " << text_of(s, "id") << "\nserial:   " << text_of(s, "serial") << "\nname:     " << text_of(s, "name")
            << "\nbmc:      " << (s.contains("bmc") ? text_of(s["bmc"], "address") : "-") << "\nlabels:   ";
  std::string labels;
  const json server_labels = s.value("labels", json::object());  // named: items() of a temporary dangles
  for (const auto& [k, v] : server_labels.items()) labels += (labels.empty() ? "" : ",") + k + "=" + v.get<std::string>();
  std::cout << (labels.empty() ? "-" : labels) << "\n";
}

void print_job(const Output& o, const json& j) {
  if (o.json) return print_json(j);
  std::cout << "id:          " << text_of(j, "id") << "\nstatus:      " << o.status(text_of(j, "status"))
            << "\nphase:       " << text_of(j, "phase") << "\noutcome:     " << text_of(j, "outcome")
            << "\nserver:      " << (j.contains("server") ? text_of(j["server"], "serial") : "-");
  if (!j.value("failed_step", json()).is_null()) std::cout << "\nfailed step: " << o.paint(text_of(j, "failed_step"), "31");
  if (!j.value("error", json()).is_null()) std::cout << "\nerror:       " << text_of(j, "error");
  std::cout << "\ncreated:     " << text_of(j, "created_at") << "\n";
}

void print_fleet(const Output& o, const json& f) {
  if (o.json) return print_json(f);
  const auto& c = f["counts"];
  std::cout << "id:        " << text_of(f, "id") << "\nname:      " << text_of(f, "name") << "\nstatus:    "
            << o.status(text_of(f, "status")) << "\nreason:    " << text_of(f, "reason") << "\nprogress:  "
            << bar(c["total"].get<int>() ? (c["succeeded"].get<double>() + c["failed"].get<double>()) / c["total"].get<double>() : 0)
            << " " << c["succeeded"] << " succeeded, " << c["failed"] << " failed, " << c["in_flight"] << " running, "
            << c["not_launched"] << " waiting (of " << c["total"] << "; budget " << c["failure_budget"] << ")\n";
  if (!f.contains("members")) return;
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : f["members"])
    rows.push_back({text_of(m, "serial"), o.status(text_of(m, "status")), text_of(m, "phase"), text_of(m, "job_id"),
                    m.contains("failed_step") ? text_of(m, "failed_step") : ""});
  std::cout << "\n";
  print_table({"SERVER", "STATUS", "PHASE", "JOB", "FAILED STEP"}, rows);
}

// Field paths and messages, as the API gave them.
int report_error(const ApiError& e) {
  std::cerr << "error: " << e.what() << " (HTTP " << e.status << ")\n";
  for (const auto& [path, message] : e.fields) std::cerr << "  " << (path.empty() ? "(body)" : path) << ": " << message << "\n";
  return kExitFailed;
}

// A server named by its id (srv_…) or by its serial number, as operators know it.
std::string resolve_server(ApiClient& api, const std::string& text) {
  if (text.rfind("srv_", 0) == 0) return text;
  std::string cursor;
  do {
    auto page = api.call("GET", "/api/v1/servers?limit=500" + (cursor.empty() ? "" : "&cursor=" + url_encode(cursor)));
    for (const auto& s : page["servers"])
      if (s.value("serial", "") == text) return s["id"];
    cursor = page.value("next_cursor", json()).is_string() ? page["next_cursor"].get<std::string>() : "";
  } while (!cursor.empty());
  throw CLI::ValidationError("no server with id or serial " + text);
}

int job_exit_code(const json& job) {
  auto outcome = job.value("outcome", json());
  if (outcome == "succeeded") return 0;
  if (outcome == "canceled" || job.value("status", "") == "canceled") return kExitCanceled;
  return kExitFailed;
}

// Follows one job on the event stream until it is complete or canceled; a progress line.
int watch_job(ApiClient& api, const Output& o, const std::string& id) {
  auto job = api.call("GET", "/api/v1/jobs/" + url_encode(id));
  auto finished = [](const json& j) { return j["status"] == "complete" || j["status"] == "canceled"; };
  const std::vector<std::string> milestones = {"iso_built", "media_inserted", "reset_issued", "maint_booted",
                                               "disk_reset_issued", "cleanup_done"};
  auto draw = [&](const json& j) {
    std::set<std::string> reached;
    for (const auto& p : j["phases"]) reached.insert(p["name"].get<std::string>());
    int done = 0;
    for (const auto& m : milestones) done += reached.count(m) ? 1 : 0;
    std::string line = id + " " + bar(static_cast<double>(done) / milestones.size()) + " " + text_of(j, "status") + " " +
                       text_of(j, "phase");
    if (o.json) std::cout << json{{"id", id}, {"status", j["status"]}, {"phase", j["phase"]}}.dump() << "\n";
    else if (o.color) std::cout << "\r\033[2K" << line << std::flush;
    else std::cout << line << "\n";
  };
  draw(job);
  if (!finished(job)) {
    // From the start of the job's history: nothing between the GET and the stream is missed.
    api.events("job=" + url_encode(id) + "&last_event_id=0", [&](const std::string&, const std::string&, const json& e) {
      if (e.value("kind", "") != "transition" && e.value("kind", "") != "phase") return true;
      job = api.call("GET", "/api/v1/jobs/" + url_encode(id));
      draw(job);
      return !finished(job);
    });
  }
  if (!o.json) {
    if (o.color) std::cout << "\n";
    std::cout << id << ": " << o.status(text_of(job, "outcome"));
    if (!job.value("failed_step", json()).is_null()) std::cout << " at " << text_of(job, "failed_step");
    if (!job.value("error", json()).is_null()) std::cout << ": " << text_of(job, "error");
    std::cout << "\n";
  }
  return job_exit_code(job);
}

// Follows a fleet until it ends, redrawing its table in place on a terminal.
int watch_fleet(ApiClient& api, const Output& o, const std::string& id) {
  std::size_t drawn_lines = 0;
  json f;
  auto draw = [&] {
    f = api.call("GET", "/api/v1/fleets/" + url_encode(id));
    if (o.json) {
      std::cout << json{{"id", id}, {"status", f["status"]}, {"counts", f["counts"]}}.dump() << "\n";
      return;
    }
    std::ostringstream frame;
    Output plain = o;
    plain.json = false;
    std::streambuf* old = std::cout.rdbuf(frame.rdbuf());
    print_fleet(plain, f);
    std::cout.rdbuf(old);
    auto text = frame.str();
    if (o.color && drawn_lines > 0) std::cout << "\033[" << drawn_lines << "F\033[J";
    std::cout << text << std::flush;
    drawn_lines = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
    if (!o.color) drawn_lines = 0;
  };
  draw();
  auto ended = [&] { return f["status"] != "running" && f["status"] != "paused"; };
  if (!ended()) {
    auto last_draw = std::chrono::steady_clock::now() - std::chrono::seconds(10);
    // From the fleet's first event: nothing between the GET and the stream is missed.
    api.events("fleet=" + url_encode(id) + "&last_event_id=0", [&](const std::string&, const std::string& type, const json& e) {
      bool terminal = type == "fleet" && e.value("kind", "") == "transition" &&
                      (e.value("name", "") == "succeeded" || e.value("name", "") == "failed" || e.value("name", "") == "canceled");
      // Redraws at most 4 times a second, however fast the events come; always at the end.
      if (!terminal && std::chrono::steady_clock::now() - last_draw < std::chrono::milliseconds(250)) return true;
      last_draw = std::chrono::steady_clock::now();
      draw();
      return !ended();
    });
    draw();
  }
  if (f["status"] == "succeeded") return 0;
  return f["status"] == "canceled" ? kExitCanceled : kExitFailed;
}

std::string completion_script(const CLI::App& app, const std::string& shell) {
  // The command tree, from the parser itself: completion never drifts from the commands.
  std::map<std::string, std::vector<std::string>> tree;
  std::function<void(const CLI::App*, const std::string&)> walk = [&](const CLI::App* a, const std::string& prefix) {
    for (const auto* sub : a->get_subcommands({})) {
      tree[prefix].push_back(sub->get_name());
      walk(sub, prefix.empty() ? sub->get_name() : prefix + " " + sub->get_name());
    }
    for (const auto* opt : a->get_options())
      for (const auto& l : opt->get_lnames()) tree[prefix].push_back("--" + l);
  };
  walk(&app, "");
  std::ostringstream out;
  if (shell == "bash") {
    out << "# bash completion for provisionctl: source <(provisionctl completion bash)\n_provisionctl() {\n"
        << "  local cur=${COMP_WORDS[COMP_CWORD]} path=\"\" w i\n"
        << "  for ((i = 1; i < COMP_CWORD; i++)); do w=${COMP_WORDS[i]}; [[ $w == -* ]] && continue\n"
        << "    case \"${path:+$path }$w\" in\n";
    for (const auto& [prefix, words] : tree)
      if (!prefix.empty()) out << "      \"" << prefix << "\") path=\"" << prefix << "\" ;;\n";
    out << "    esac; done\n  local words=\"\"\n  case \"$path\" in\n";
    for (const auto& [prefix, words] : tree) {
      out << "    \"" << prefix << "\") words=\"";
      for (const auto& w : words) out << w << " ";
      out << "\" ;;\n";
    }
    out << "  esac\n  mapfile -t COMPREPLY < <(compgen -W \"$words\" -- \"$cur\")\n}\ncomplete -o default -F _provisionctl provisionctl\n";
  } else {
    out << "#compdef provisionctl\n# zsh completion for provisionctl: provisionctl completion zsh > ~/.zfunc/_provisionctl\n"
        << "_provisionctl() {\n  local path=\"\" w\n  for w in ${words[2,CURRENT-1]}; do [[ $w == -* ]] && continue\n"
        << "    case \"${path:+$path }$w\" in\n";
    for (const auto& [prefix, words] : tree)
      if (!prefix.empty()) out << "      \"" << prefix << "\") path=\"" << prefix << "\" ;;\n";
    out << "    esac; done\n  case \"$path\" in\n";
    for (const auto& [prefix, words] : tree) {
      out << "    \"" << prefix << "\") compadd -- ";
      for (const auto& w : words) out << w << " ";
      out << ";;\n";
    }
    out << "  esac\n}\ncompdef _provisionctl provisionctl\n";
  }
  return out.str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"provisionctl: drive a provisioner controller from a terminal or a script.\n\n"
               "The controller's URL and token come from the config file's current context\n"
               "(~/.config/provisioner/config.toml: current_context = \"lab\", then [contexts.lab] with\n"
               "url, token or token_file, ca_file, insecure), overridden by PROVISIONER_CONTEXT,\n"
               "PROVISIONER_URL and PROVISIONER_TOKEN. A token is never taken on the command line.\n\n"
               "Exit codes: 0 success, 1 refused by the API or the job/fleet failed, 2 usage,\n"
               "3 the controller could not be reached, 4 the job/fleet was canceled.",
               "provisionctl"};
  app.require_subcommand(1);
  app.fallthrough();  // -o, --context, … anywhere on the line (subcommands inherit this)
  std::string config_path, context_name, url, output = "table";
  bool insecure = false;
  app.add_option("--config", config_path, "config file (default ~/.config/provisioner/config.toml)");
  app.add_option("--context", context_name, "a named context of the config file");
  app.add_option("--url", url, "the controller's API URL (overrides the context)");
  app.add_flag("--insecure", insecure, "do not verify the controller's TLS certificate");
  app.add_option("-o,--output", output, "table (default) or json")->check(CLI::IsMember({"table", "json"}));

  std::function<int(ApiClient&, const Output&)> action;
  auto on = [&](CLI::App* cmd, std::function<int(ApiClient&, const Output&)> f) {
    cmd->callback([&action, f] { action = f; });
  };

  // --- server ---
  auto* server = app.add_subcommand("server", "servers with a BMC: add, list, get, label, rm")->require_subcommand(1);
  {
    auto* add = server->add_subcommand("add", "register a server (a JSON/YAML record, or flags)");
    static std::string file, serial, name, address, user, password_file, profile;
    static std::vector<std::string> labels;
    add->add_option("-f,--file", file, "the record (server.schema.json), '-' for stdin");
    add->add_option("--serial", serial, "serial number (what the BMC reports)");
    add->add_option("--name", name, "a name");
    add->add_option("--bmc", address, "BMC address, https://host[:port]");
    add->add_option("--bmc-user", user, "BMC user name");
    add->add_option("--bmc-password-file", password_file, "a file holding the BMC password (never a flag)");
    add->add_option("--profile", profile, "vendor profile (auto, dell-idrac, hpe-ilo, ...)");
    add->add_option("-l,--label", labels, "key=value, repeatable");
    on(add, [&](ApiClient& api, const Output& o) {
      json record = file.empty() ? json::object() : read_document(file);
      if (!serial.empty()) record["serial"] = serial;
      if (!name.empty()) record["name"] = name;
      if (!address.empty()) record["bmc"]["address"] = address;
      if (!user.empty()) record["bmc"]["username"] = user;
      if (!profile.empty()) record["bmc"]["profile"] = profile;
      if (!password_file.empty()) {
        auto pw = read_text(password_file);
        while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r')) pw.pop_back();
        record["bmc"]["password"] = pw;
      }
      for (const auto& l : labels) {
        auto eq = l.find('=');
        if (eq == std::string::npos) throw CLI::ValidationError("--label " + l + ": expected key=value");
        record["labels"][l.substr(0, eq)] = l.substr(eq + 1);
      }
      print_server(o, api.call("POST", "/api/v1/servers", record));
      return 0;
    });
    auto* list = server->add_subcommand("list", "list servers");
    on(list, [](ApiClient& api, const Output& o) {
      json all = json::array();
      std::string cursor;
      do {
        auto page = api.call("GET", "/api/v1/servers?limit=500" + (cursor.empty() ? "" : "&cursor=" + url_encode(cursor)));
        for (auto& s : page["servers"]) all.push_back(s);
        cursor = page.value("next_cursor", json()).is_string() ? page["next_cursor"].get<std::string>() : "";
      } while (!cursor.empty());
      if (o.json) return print_json(all), 0;
      std::vector<std::vector<std::string>> rows;
      for (const auto& s : all) {
        std::string labels;
        const json server_labels = s.value("labels", json::object());
        for (const auto& [k, v] : server_labels.items())
          labels += (labels.empty() ? "" : ",") + k + "=" + v.get<std::string>();
        rows.push_back({text_of(s, "id"), text_of(s, "serial"), text_of(s, "name"),
                        s.contains("bmc") ? text_of(s["bmc"], "address") : "-", labels});
      }
      print_table({"ID", "SERIAL", "NAME", "BMC", "LABELS"}, rows);
      return 0;
    });
    auto* get = server->add_subcommand("get", "show one server");
    static std::string id;
    get->add_option("id", id, "server id or serial number")->required();
    on(get, [](ApiClient& api, const Output& o) {
      return print_server(o, api.call("GET", "/api/v1/servers/" + url_encode(resolve_server(api, id)))), 0;
    });
    auto* label = server->add_subcommand("label", "set (key=value) or remove (key-) labels");
    static std::string label_id;
    static std::vector<std::string> changes;
    label->add_option("id", label_id, "server id")->required();
    label->add_option("labels", changes, "key=value or key-")->required();
    on(label, [](ApiClient& api, const Output& o) {
      json patch = {{"labels", json::object()}};
      for (const auto& c : changes) {
        if (c.size() > 1 && c.back() == '-') patch["labels"][c.substr(0, c.size() - 1)] = nullptr;
        else if (auto eq = c.find('='); eq != std::string::npos) patch["labels"][c.substr(0, eq)] = c.substr(eq + 1);
        else throw CLI::ValidationError(c + ": expected key=value or key-");
      }
      return print_server(o, api.call("PATCH", "/api/v1/servers/" + url_encode(label_id), patch)), 0;
    });
    auto* rm = server->add_subcommand("rm", "remove a server (refused while it has unfinished jobs)");
    static std::string rm_id;
    rm->add_option("id", rm_id, "server id")->required();
    on(rm, [](ApiClient& api, const Output&) {
      api.call("DELETE", "/api/v1/servers/" + url_encode(rm_id));
      return 0;
    });
  }

  // --- job ---
  auto* job = app.add_subcommand("job", "jobs: submit, get, list, cancel, logs, watch")->require_subcommand(1);
  {
    auto* submit = job->add_subcommand("submit", "submit a job for a server or a node");
    static std::string file, recipe_ref, server_id, node_id;
    static bool watch = false;
    submit->add_option("-f,--file", file, "the recipe (JSON or YAML), '-' for stdin");
    submit->add_option("--recipe-ref", recipe_ref, "a named recipe instead: name[@version]");
    submit->add_option("--server", server_id, "server id, or its serial number");
    submit->add_option("--node", node_id, "node id (network boot)");
    submit->add_flag("-w,--watch", watch, "follow the job until it ends (exit code = outcome)");
    on(submit, [](ApiClient& api, const Output& o) {
      if (file.empty() == recipe_ref.empty()) throw CLI::ValidationError("give -f recipe.json or --recipe-ref, one of them");
      if (server_id.empty() == node_id.empty()) throw CLI::ValidationError("give --server or --node, one of them");
      json body = json::object();
      if (!server_id.empty()) body["server"] = {{"id", resolve_server(api, server_id)}};
      else body["node"] = {{"id", node_id}};
      if (!file.empty()) body["recipe"] = read_document(file);
      else body["recipe_ref"] = recipe_ref;
      auto created = api.call("POST", "/api/v1/jobs", body);
      if (watch) return watch_job(api, o, created["id"]);
      if (o.json) print_json(created);
      else std::cout << created["id"].get<std::string>() << "\n";
      return 0;
    });
    auto* get = job->add_subcommand("get", "show one job");
    static std::string id;
    get->add_option("id", id, "job id")->required();
    on(get, [](ApiClient& api, const Output& o) { return print_job(o, api.call("GET", "/api/v1/jobs/" + url_encode(id))), 0; });
    auto* list = job->add_subcommand("list", "list jobs, newest first");
    static std::string status, serial;
    static int limit = 50;
    list->add_option("--status", status, "only jobs in this status");
    list->add_option("--serial", serial, "only jobs of this server serial");
    list->add_option("--limit", limit, "at most this many (1-500)");
    on(list, [](ApiClient& api, const Output& o) {
      std::string q = "?limit=" + std::to_string(limit);
      if (!status.empty()) q += "&status=" + url_encode(status);
      if (!serial.empty()) q += "&server=" + url_encode(serial);
      auto page = api.call("GET", "/api/v1/jobs" + q);
      if (o.json) return print_json(page["jobs"]), 0;
      std::vector<std::vector<std::string>> rows;
      for (const auto& j : page["jobs"])
        rows.push_back({text_of(j, "id"), text_of(j, "serial"), o.status(text_of(j, "status")), text_of(j, "phase"),
                        text_of(j, "created_at")});
      print_table({"ID", "SERIAL", "STATUS", "PHASE", "CREATED"}, rows);
      return 0;
    });
    auto* cancel = job->add_subcommand("cancel", "cancel a job (media ejected; the server is never reset)");
    static std::string cancel_id;
    cancel->add_option("id", cancel_id, "job id")->required();
    on(cancel, [](ApiClient& api, const Output& o) {
      return print_job(o, api.call("POST", "/api/v1/jobs/" + url_encode(cancel_id) + "/cancel")), 0;
    });
    auto* logs = job->add_subcommand("logs", "a job's history and phases, oldest first");
    static std::string logs_id;
    logs->add_option("id", logs_id, "job id")->required();
    on(logs, [](ApiClient& api, const Output& o) {
      auto j = api.call("GET", "/api/v1/jobs/" + url_encode(logs_id));
      std::vector<std::pair<std::string, std::string>> lines;
      for (const auto& h : j["history"])
        lines.emplace_back(h["at"], "status " + o.status(h["name"]) + (h.contains("detail") ? "  " + text_of(h, "detail") : ""));
      for (const auto& p : j["phases"])
        lines.emplace_back(p["at"], "phase  " + p["name"].get<std::string>() + (p.contains("detail") ? "  " + text_of(p, "detail") : ""));
      std::stable_sort(lines.begin(), lines.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      if (o.json) return print_json(j), 0;
      for (const auto& [at, text] : lines) std::cout << at << "  " << text << "\n";
      if (!j.value("failed_step", json()).is_null()) std::cout << "failed step: " << text_of(j, "failed_step") << "\n";
      if (!j.value("error", json()).is_null()) std::cout << "error: " << text_of(j, "error") << "\n";
      return 0;
    });
    auto* watch_cmd = job->add_subcommand("watch", "follow a job live until it ends; the exit code is its outcome");
    static std::string watch_id;
    watch_cmd->add_option("id", watch_id, "job id")->required();
    on(watch_cmd, [](ApiClient& api, const Output& o) { return watch_job(api, o, watch_id); });
  }

  // --- fleet ---
  auto* fleet = app.add_subcommand("fleet", "fleet runs: run, get, list, cancel, pause, resume")->require_subcommand(1);
  {
    auto* run = fleet->add_subcommand("run", "run one recipe over many servers, gated; a live table until it ends");
    static std::string file, recipe_file, recipe_ref, name, max_failures;
    static int max_parallel = 0, canary = -1;
    static bool detach = false;
    run->add_option("-f,--file", file,
                    "inventory (JSON or YAML): servers: [ids] or selector: {labels: {...}}, and recipe, recipe_ref or recipe_file")
        ->required();
    run->add_option("--recipe", recipe_file, "the recipe file (overrides the inventory's)");
    run->add_option("--recipe-ref", recipe_ref, "a named recipe (overrides the inventory's)");
    run->add_option("--name", name, "a name for the run");
    run->add_option("--max-parallel", max_parallel, "never more than this many jobs at once (default 10)");
    run->add_option("--canary", canary, "run this many first, alone; the rest only if they succeed");
    run->add_option("--max-failures", max_failures, "failures tolerated: a count or a percentage (\"10%\")");
    run->add_flag("-d,--detach", detach, "print the fleet id and return at once");
    on(run, [](ApiClient& api, const Output& o) {
      auto inventory = read_document(file);
      if (!inventory.is_object()) throw CLI::ValidationError(file + ": expected a mapping (servers/selector, recipe)");
      if (inventory.contains("recipe_file")) {
        auto base = std::filesystem::path(file).parent_path();
        inventory["recipe"] = read_document((base / inventory["recipe_file"].get<std::string>()).string());
        inventory.erase("recipe_file");
      }
      if (!recipe_file.empty()) inventory["recipe"] = read_document(recipe_file), inventory.erase("recipe_ref");
      if (!recipe_ref.empty()) inventory["recipe_ref"] = recipe_ref, inventory.erase("recipe");
      if (!name.empty()) inventory["name"] = name;
      if (max_parallel > 0) inventory["max_parallel"] = max_parallel;
      if (canary >= 0) inventory["canary"] = canary;
      if (!max_failures.empty()) {
        if (max_failures.back() == '%') inventory["max_failures"] = max_failures;
        else inventory["max_failures"] = std::stoi(max_failures);
      }
      auto created = api.call("POST", "/api/v1/fleets", inventory);
      if (detach) {
        if (o.json) print_json(created);
        else std::cout << created["id"].get<std::string>() << "\n";
        return 0;
      }
      return watch_fleet(api, o, created["id"]);
    });
    auto* get = fleet->add_subcommand("get", "show one fleet with its servers");
    static std::string id;
    static bool follow = false;
    get->add_option("id", id, "fleet id")->required();
    get->add_flag("-w,--watch", follow, "redraw live until the fleet ends");
    on(get, [](ApiClient& api, const Output& o) {
      if (follow) return watch_fleet(api, o, id);
      return print_fleet(o, api.call("GET", "/api/v1/fleets/" + url_encode(id))), 0;
    });
    auto* list = fleet->add_subcommand("list", "list fleets, newest first");
    static std::string status;
    list->add_option("--status", status, "only fleets in this status");
    on(list, [](ApiClient& api, const Output& o) {
      auto page = api.call("GET", "/api/v1/fleets" + (status.empty() ? "" : "?status=" + url_encode(status)));
      if (o.json) return print_json(page["fleets"]), 0;
      std::vector<std::vector<std::string>> rows;
      for (const auto& f : page["fleets"]) {
        const auto& c = f["counts"];
        rows.push_back({text_of(f, "id"), text_of(f, "name"), o.status(text_of(f, "status")),
                        std::to_string(c["succeeded"].get<int>()) + "/" + std::to_string(c["total"].get<int>()),
                        std::to_string(c["failed"].get<int>()), text_of(f, "created_at")});
      }
      print_table({"ID", "NAME", "STATUS", "SUCCEEDED", "FAILED", "CREATED"}, rows);
      return 0;
    });
    static std::string verb_targets[3];  // the fleet id each of cancel/pause/resume takes
    int verb_index = 0;
    for (const char* verb : {"cancel", "pause", "resume"}) {
      auto* cmd = fleet->add_subcommand(verb, std::string(verb) == "cancel"
                                                  ? "stop launching and cancel running jobs (never a reset)"
                                                  : std::string(verb) == "pause" ? "stop launching; running jobs go on"
                                                                                 : "launch again");
      auto* target = &verb_targets[verb_index++];
      cmd->add_option("id", *target, "fleet id")->required();
      std::string v = verb;
      on(cmd, [target, v](ApiClient& api, const Output& o) {
        return print_fleet(o, api.call("POST", "/api/v1/fleets/" + url_encode(*target) + "/" + v)), 0;
      });
    }
  }

  // --- recipe ---
  auto* recipe = app.add_subcommand("recipe", "named recipes: push, get, list")->require_subcommand(1);
  {
    auto* push = recipe->add_subcommand("push", "store a recipe version: name@version -f recipe.json");
    static std::string ref, file;
    push->add_option("ref", ref, "name@version")->required();
    push->add_option("-f,--file", file, "the recipe (JSON or YAML)")->required();
    on(push, [](ApiClient& api, const Output& o) {
      auto at = ref.find('@');
      if (at == std::string::npos) throw CLI::ValidationError(ref + ": expected name@version");
      auto r = api.call("PUT", "/api/v1/recipes/" + url_encode(ref.substr(0, at)) + "/" + url_encode(ref.substr(at + 1)),
                        read_document(file));
      if (o.json) return print_json(r), 0;
      std::cout << text_of(r, "recipe_ref") << "  " << text_of(r, "digest") << "\n";
      return 0;
    });
    auto* get = recipe->add_subcommand("get", "show a recipe version (secrets redacted): name@version");
    static std::string get_ref;
    get->add_option("ref", get_ref, "name@version")->required();
    on(get, [](ApiClient& api, const Output&) {
      auto at = get_ref.find('@');
      if (at == std::string::npos) throw CLI::ValidationError(get_ref + ": expected name@version");
      print_json(api.call("GET", "/api/v1/recipes/" + url_encode(get_ref.substr(0, at)) + "/" + url_encode(get_ref.substr(at + 1))));
      return 0;
    });
    auto* list = recipe->add_subcommand("list", "a recipe's versions");
    static std::string list_name;
    list->add_option("name", list_name, "recipe name")->required();
    on(list, [](ApiClient& api, const Output& o) {
      auto r = api.call("GET", "/api/v1/recipes/" + url_encode(list_name));
      if (o.json) return print_json(r), 0;
      for (const auto& v : r["versions"]) std::cout << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
      return 0;
    });
  }

  // --- artifact ---
  auto* artifact = app.add_subcommand("artifact", "artifacts: upload")->require_subcommand(1);
  {
    auto* upload = artifact->add_subcommand("upload", "stream a file to the artifact store; its SHA-256 is checked by both sides");
    static std::string file, purpose, name;
    upload->add_option("file", file, "the file")->required()->check(CLI::ExistingFile);
    upload->add_option("--purpose", purpose, "e.g. maintenance-iso (the controller then uses it as the current one)");
    upload->add_option("--name", name, "a name (default: the file's name)");
    on(upload, [](ApiClient& api, const Output& o) {
      std::uint64_t size = std::filesystem::file_size(file);
      auto digest = sha256_range(file, 0, size);  // the controller refuses the body if it differs
      std::string q = "?digest=sha256:" + digest + "&name=" + url_encode(name.empty() ? std::filesystem::path(file).filename().string() : name);
      if (!purpose.empty()) q += "&purpose=" + url_encode(purpose);
      auto last = std::chrono::steady_clock::now();
      auto r = api.upload("/api/v1/artifacts" + q, file, [&](std::uint64_t sent, std::uint64_t total) {
        if (!o.color || std::chrono::steady_clock::now() - last < std::chrono::milliseconds(100)) return;
        last = std::chrono::steady_clock::now();
        std::cerr << "\r\033[2K" << bar(static_cast<double>(sent) / total) << " " << sent / (1 << 20) << "/" << total / (1 << 20)
                  << " MiB" << std::flush;
      });
      if (o.color) std::cerr << "\r\033[2K";
      if (r.value("sha256", "") != digest)
        throw std::runtime_error("the controller stored " + r.value("sha256", std::string("nothing")) + ", not " + digest);
      if (o.json) return print_json(r), 0;
      std::cout << "sha256:" << digest << "  " << size << " bytes" << (r.value("reused", false) ? " (already stored)" : "") << "\n";
      return 0;
    });
  }

  {
    auto* verify = artifact->add_subcommand("verify", "check a downloaded file against an artifact id (plain or composite)");
    static std::string file, id;
    verify->add_option("file", file, "the downloaded file")->required()->check(CLI::ExistingFile);
    verify->add_option("sha256", id, "the artifact's id (from a job's media or a URL)")->required();
    on(verify, [](ApiClient& api, const Output& o) {
      auto info = api.call("GET", "/api/v1/artifacts/" + url_encode(id));
      auto size = std::filesystem::file_size(file);
      bool ok = size == info["size"].get<std::uint64_t>();
      std::string got;
      if (ok && info.value("id_scheme", "") == "provisioner-composite-v2") {
        // Each segment's digest, then the id rebuilt from them.
        std::string text = "provisioner-composite-v2\n";
        for (const auto& seg : info["segments"]) {
          auto d = sha256_range(file, seg["start"], seg["length"]);
          if (d != seg["digest"]) ok = false;
          text += std::to_string(seg["length"].get<std::uint64_t>()) + " " + d + "\n";
        }
        got = provisioner::crypto::sha256_hex(text);
      } else if (ok) {
        got = sha256_range(file, 0, size);
      }
      ok = ok && got == id;
      if (o.json) print_json({{"file", file}, {"sha256", id}, {"ok", ok}, {"size", size}});
      else std::cout << file << ": " << (ok ? o.paint("OK", "32") : o.paint("MISMATCH", "31")) << "\n";
      return ok ? 0 : kExitFailed;
    });
  }

  // --- node ---
  auto* node = app.add_subcommand("node", "machines that boot from the network: list, get, state")->require_subcommand(1);
  {
    auto* list = node->add_subcommand("list", "list nodes");
    static std::string state;
    list->add_option("--state", state, "only nodes in this state");
    on(list, [](ApiClient& api, const Output& o) {
      auto page = api.call("GET", "/api/v1/nodes?limit=500" + (state.empty() ? "" : "&state=" + url_encode(state)));
      if (o.json) return print_json(page["nodes"]), 0;
      std::vector<std::vector<std::string>> rows;
      for (const auto& n : page["nodes"]) {
        std::string macs;
        for (const auto& m : n.value("macs", json::array())) macs += (macs.empty() ? "" : ",") + m.get<std::string>();
        rows.push_back({text_of(n, "id"), text_of(n, "name"), o.status(text_of(n, "state")), macs, text_of(n, "job_id")});
      }
      print_table({"ID", "NAME", "STATE", "MACS", "JOB"}, rows);
      return 0;
    });
    auto* get = node->add_subcommand("get", "show one node (with its history)");
    static std::string id;
    get->add_option("id", id, "node id")->required();
    on(get, [](ApiClient& api, const Output&) { return print_json(api.call("GET", "/api/v1/nodes/" + url_encode(id))), 0; });
    auto* st = node->add_subcommand("state", "move a node: pending (a new install: --reprovision), retired, discovered, ...");
    static std::string state_id, to, reason;
    st->add_option("id", state_id, "node id")->required();
    st->add_option("state", to, "the new state")->required();
    st->add_option("--reason", reason, "why (kept in the node's history)");
    on(st, [](ApiClient& api, const Output&) {
      json body{{"state", to}};
      if (!reason.empty()) body["reason"] = reason;
      print_json(api.call("PATCH", "/api/v1/nodes/" + url_encode(state_id) + "/state", body));
      return 0;
    });
  }

  // --- completion ---
  auto* completion = app.add_subcommand("completion", "print a shell completion script: bash or zsh");
  static std::string shell;
  completion->add_option("shell", shell, "bash or zsh")->required()->check(CLI::IsMember({"bash", "zsh"}));
  bool completion_only = false;
  completion->callback([&] { completion_only = true; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  if (completion_only) {
    std::cout << completion_script(app, shell);
    return 0;
  }
  Output o;
  o.json = output == "json";
  o.color = !o.json && ::isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR");
  try {
    ApiClient api(load_context(config_path, context_name, url, insecure));
    return action(api, o);
  } catch (const ApiError& e) {
    return report_error(e);
  } catch (const CLI::ValidationError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitUsage;
  } catch (const Unreachable& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitUnreachable;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kExitFailed;
  }
}
