/*
 * blackhole -- a loopback TCP port that never completes a connect: it
 * listens with a backlog of 0 and fills its accept queue with its own
 * connections, which it never accepts; the kernel then drops every new SYN,
 * and a client's connect hangs as it would against a firewalled host.
 *
 *   blackhole PORT_FILE      writes the port, then waits until killed
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  int lfd, i;
  FILE *f;
  if (argc != 2) { fprintf(stderr, "usage: blackhole PORT_FILE\n"); return 2; }
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(lfd, 0) != 0 || getsockname(lfd, (struct sockaddr *)&a, &len) != 0) {
    perror("blackhole");
    return 1;
  }
  /* fill the accept queue: these connects complete, later ones cannot */
  for (i = 0; i < 4; i++) {
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c >= 0) connect(c, (struct sockaddr *)&a, sizeof a);
    usleep(20000);
  }
  f = fopen(argv[1], "w");
  if (!f) { perror(argv[1]); return 1; }
  fprintf(f, "%d\n", ntohs(a.sin_port));
  fclose(f);
  for (;;) pause();
}
