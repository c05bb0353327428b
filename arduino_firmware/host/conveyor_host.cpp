// The conveyor logic built for the PC, on a pseudo-terminal: the same protocol as the board,
// for the conformance tests. Prints "READY <pty>" and, like the emulator harness, "PIN EN <0|1>"
// and "PIN LAMP <0|1>" on every change. Usage: conveyor_host LINK_PATH
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "../conveyor/conveyor_logic.h"

static uint32_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint32_t)(ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s LINK_PATH\n", argv[0]);
    return 2;
  }
  int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) || unlockpt(master)) return 1;
  const char* slave = ptsname(master);
  unlink(argv[1]);
  if (symlink(slave, argv[1])) return 1;
  int keep = open(slave, O_RDWR | O_NOCTTY);  // keeps the pty alive between client opens
  (void)keep;
  printf("READY %s\n", slave);
  fflush(stdout);
  gc::Conveyor conveyor;
  int en = -1, lamp = -1;  // unknown: the first pass always reports both pins
  for (;;) {
    pollfd p = {master, POLLIN, 0};
    if (poll(&p, 1, 1) > 0 && (p.revents & POLLIN)) {
      char buf[256];
      ssize_t n = read(master, buf, sizeof buf);
      uint32_t t = now_ms();
      for (ssize_t i = 0; i < n; ++i) conveyor.feed(buf[i], t);
    }
    conveyor.tick(now_ms());
    char out[256];
    size_t n = conveyor.take_output(out, sizeof out);
    if (n && write(master, out, n) < 0) return 1;
    int new_en = conveyor.running() ? 0 : 1, new_lamp = conveyor.lamp() ? 1 : 0;  // EN high = driver off
    if (new_en != en || new_lamp != lamp) {
      if (new_en != en) printf("PIN EN %d\n", new_en);
      if (new_lamp != lamp) printf("PIN LAMP %d\n", new_lamp);
      fflush(stdout);
      en = new_en;
      lamp = new_lamp;
    }
  }
}
