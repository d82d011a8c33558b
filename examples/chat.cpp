// chat.cpp - an interactive chat over the model's chat template.
//
//   chat MODEL.zmoe [--system TEXT] [--temperature T] [--seed S] [--max-new-tokens N]
//
// Reads one user message per line from stdin and streams each reply to
// stdout, keeping the conversation; "/reset" starts over, "/exit" or end of
// input quits. Ctrl-C while a reply is written stops it; at the prompt it
// quits (POSIX signals). Each turn renders the whole conversation with the model's
// chat template (zipmoe_generate_chat), as Python's model.generate(messages).
#include <signal.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <zipmoe.h>

namespace {

volatile std::sig_atomic_t interrupted = 0;

void on_interrupt(int) { interrupted = 1; }

struct Reply {
  std::string text;
};

bool on_piece(const char* piece, size_t length, void* user) {
  static_cast<Reply*>(user)->text.append(piece, length);
  std::fwrite(piece, 1, length, stdout);
  std::fflush(stdout);
  return !interrupted;  // false ends this reply, cleanly
}

struct Message {
  std::string role;
  std::string content;
};

int usage(const char* program) {
  std::fprintf(stderr, "usage: %s MODEL.zmoe [--system TEXT] [--temperature T] [--seed S] [--max-new-tokens N]\n",
               program);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage(argv[0]);
  zipmoe_sampling_params sampling = zipmoe_sampling_default_params();
  std::string system;
  for (int i = 2; i < argc; ++i) {
    const std::string option = argv[i];
    if (i + 1 >= argc) return usage(argv[0]);
    const char* value = argv[++i];
    if (option == "--system") {
      system = value;
    } else if (option == "--temperature") {
      sampling.temperature = std::strtof(value, nullptr);
    } else if (option == "--seed") {
      sampling.seed = std::strtoull(value, nullptr, 10);
    } else if (option == "--max-new-tokens") {
      sampling.max_new_tokens = std::atoi(value);
    } else {
      return usage(argv[0]);
    }
  }

  zipmoe_model* model = nullptr;
  if (zipmoe_model_load(argv[1], nullptr, &model) != ZIPMOE_OK) {
    std::fprintf(stderr, "load: %s\n", zipmoe_last_error());
    return 1;
  }
  if (zipmoe_model_chat_template(model) == nullptr) {
    std::fprintf(stderr, "%s has no chat template\n", argv[1]);
    zipmoe_model_free(model);
    return 1;
  }
  zipmoe_context* ctx = nullptr;
  if (zipmoe_context_new(model, nullptr, &ctx) != ZIPMOE_OK) {
    std::fprintf(stderr, "context: %s\n", zipmoe_last_error());
    zipmoe_model_free(model);
    return 1;
  }
  // Without SA_RESTART, so that Ctrl-C at the prompt ends the wait for a line.
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = on_interrupt;
  sigaction(SIGINT, &action, nullptr);

  std::vector<Message> history;
  if (!system.empty()) history.push_back({"system", system});
  std::string line;
  int status = 0;
  for (;;) {
    interrupted = 0;
    if (!std::getline(std::cin, line) || line == "/exit" || interrupted) break;
    if (line == "/reset") {
      history.resize(system.empty() ? 0 : 1);
      continue;
    }
    if (line.empty()) continue;
    history.push_back({"user", line});
    std::vector<zipmoe_chat_message> messages;
    for (const Message& m : history) messages.push_back({m.role.c_str(), m.content.c_str()});
    Reply reply;
    if (zipmoe_generate_chat(ctx, messages.data(), messages.size(), &sampling, on_piece, &reply) != ZIPMOE_OK) {
      std::fprintf(stderr, "\ngenerate: %s\n", zipmoe_last_error());
      status = 1;
      break;
    }
    std::printf("\n");
    history.push_back({"assistant", reply.text});
  }
  zipmoe_context_free(ctx);
  zipmoe_model_free(model);
  return status;
}
