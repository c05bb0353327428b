// A tiny test harness for the host builds of the firmware logic.
#pragma once
#include <cstdio>

struct CheckCounts { int passed = 0, failed = 0; };
inline CheckCounts& check_counts() { static CheckCounts c; return c; }

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (cond) {                                                                  \
      ++check_counts().passed;                                                   \
    } else {                                                                     \
      ++check_counts().failed;                                                   \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                \
    }                                                                            \
  } while (0)

inline int check_report(const char* name) {
  std::printf("%s: %d passed, %d failed\n", name, check_counts().passed, check_counts().failed);
  return check_counts().failed ? 1 : 0;
}
