// Host unit tests of the knob box logic: smoothing, dead band, ends, heartbeat, line format.
#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "../../esp32_firmware/knob_box/knob_logic.h"
#include "check.h"

// One reading as the sketch takes it: the mean of 16 ADC samples, each with ESP32-like noise
// (about 20 mV rms) and now and then a 300 mV spike.
static uint16_t reading(std::mt19937& rng, float mv, int i) {
  std::normal_distribution<float> noise(0.0f, 20.0f);
  float sum = 0;
  for (int k = 0; k < 16; ++k) sum += mv + noise(rng) + ((i * 16 + k) % 1597 == 0 ? 300.0f : 0.0f);
  return (uint16_t)(sum / 16 + 0.5f);
}

static void test_knob_left_alone_does_not_move() {
  std::mt19937 rng(1);
  kb::KnobFilter f;
  for (int i = 0; i < 200; ++i) f.update(reading(rng, 1650, i));
  uint16_t settled = f.position();
  int changes = 0;
  for (int i = 0; i < 60000; ++i) {  // ten minutes at 100 readings a second
    uint16_t before = f.position();
    f.update(reading(rng, 1650, i));
    if (f.position() != before) ++changes;
  }
  CHECK(std::abs((int)settled - 500) <= 6);
  CHECK(changes == 0);
}

static void test_knob_follows_a_turn() {
  kb::KnobFilter f;
  f.update(600);
  int steps = 0;
  while (f.update(2700) < 840 && steps < 100) ++steps;
  CHECK(steps < 30);  // 10 ms per reading: settles in < 0.3 s
  for (int i = 0; i < 100; ++i) f.update(2700);
  CHECK(std::abs((int)f.position() - 850) <= 4);
}

static void test_ends_are_reachable() {
  kb::KnobFilter f;
  for (int i = 0; i < 200; ++i) f.update(3300);
  CHECK(f.position() == 1000);
  for (int i = 0; i < 200; ++i) f.update(0);
  CHECK(f.position() == 0);
}

static void test_line_format_and_heartbeat() {
  CHECK(kb::checksum("123456789", 9) == 0x29B1);  // CRC-16/CCITT-FALSE check value, as app/links/protocol.py
  kb::Reporter r(500);
  char line[64];
  CHECK(r.due(0, 10, 20));
  size_t n = r.format(0, 10, 20, false, line, sizeof line);
  CHECK(n > 0);
  CHECK(std::strncmp(line, "$K,0,10,20*", 11) == 0);
  char cs[5];
  std::snprintf(cs, 5, "%04X", kb::checksum("K,0,10,20", 9));
  CHECK(std::string(line + 11, 5) == std::string(cs) + "\n");
  CHECK(!r.due(100, 10, 20));
  CHECK(r.due(100, 11, 20));
  CHECK(r.due(500, 10, 20));
  r.format(500, 10, 20, false, line, sizeof line);
  CHECK(std::strncmp(line, "$K,1,", 5) == 0);
}

static void test_prototype_format() {
  kb::Reporter r;
  char line[64];
  r.format(0, 0, 1000, true, line, sizeof line);
  CHECK(std::string(line) == "_34#0#34_\n_39#4095#39_\n");
  CHECK(kb::permille_to_raw(500) == 2048);
}

int main() {
  test_knob_left_alone_does_not_move();
  test_knob_follows_a_turn();
  test_ends_are_reachable();
  test_line_format_and_heartbeat();
  test_prototype_format();
  return check_report("knob logic");
}
