/*
 * switchboard-lws-reference: the plain libwebsockets server the benchmarks
 * compare the gateway with. Same Debian lws build, same libuv event loop,
 * lws's default settings otherwise (default retry/validity policy, 1 KiB rx
 * buffer unless --rx-buffer). It answers the first message of a connection
 * with {"id":1,"connect":{}} and ignores the rest: just enough for
 * switchboard-loadgen --mode raw to count a connect.
 *
 *   switchboard-lws-reference --iface 127.0.0.1 --port 0 [--rx-buffer 1024]
 *
 * Prints "listening <port>" once it accepts; SIGTERM/SIGINT stop it.
 * Threading: one thread (the lws service loop).
 */
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct session {
  int answered;
  int pending;
};

static struct lws_context *context;

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
  struct session *s = (struct session *)user;
  static const char reply[] = "{\"id\":1,\"connect\":{}}";
  unsigned char buf[LWS_PRE + sizeof(reply)];
  (void)in;
  (void)len;
  switch (reason) {
    case LWS_CALLBACK_RECEIVE:
      if (!s->answered) {
        s->answered = 1;
        s->pending = 1;
        lws_callback_on_writable(wsi);
      }
      break;
    case LWS_CALLBACK_SERVER_WRITEABLE:
      if (s->pending) {
        s->pending = 0;
        memcpy(buf + LWS_PRE, reply, sizeof(reply) - 1);
        if (lws_write(wsi, buf + LWS_PRE, sizeof(reply) - 1, LWS_WRITE_TEXT) < 0) return -1;
      }
      break;
    default:
      break;
  }
  return 0;
}

/* The libuv loop inside lws_service() does not return on its own; a
 * benchmark reference has nothing to flush, so a signal just ends it. */
static void on_signal(int sig) {
  (void)sig;
  _exit(0);
}

int main(int argc, char **argv) {
  const char *iface = "127.0.0.1";
  int port = 0;
  size_t rx = 1024;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--iface")) iface = argv[i + 1];
    else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--rx-buffer")) rx = (size_t)atol(argv[i + 1]);
    else {
      fprintf(stderr, "usage: %s [--iface A] [--port P] [--rx-buffer BYTES]\n", argv[0]);
      return 2;
    }
  }
  struct lws_protocols protocols[] = {
      {"reference", callback, sizeof(struct session), rx, 0, NULL, 0},
      {NULL, NULL, 0, 0, 0, NULL, 0}};
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof(info));
  info.port = port;
  info.iface = iface;
  info.protocols = protocols;
  info.options = LWS_SERVER_OPTION_LIBUV;
  lws_set_log_level(LLL_ERR, NULL);
  signal(SIGPIPE, SIG_IGN);
  context = lws_create_context(&info);
  /* After the context: lws's libuv glue installs its own SIGINT/SIGTERM
   * watchers, which would leave lws_service() returning at once forever. */
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  if (!context) {
    fprintf(stderr, "cannot start lws on %s:%d\n", iface, port);
    return 1;
  }
  struct lws_vhost *vh = lws_get_vhost_by_name(context, "default");
  printf("listening %d\n", vh ? lws_get_vhost_listen_port(vh) : port);
  fflush(stdout);
  while (lws_service(context, 0) >= 0) {
  }
  lws_context_destroy(context);
  return 0;
}
