// Knob box logic: see knob_logic.h and docs/protocols.md.
#include "knob_logic.h"

#include <stdio.h>

namespace kb {

// The same CRC-16 stands in the other sketch and in app/links/protocol.py: each sketch folder must
// compile on its own in the Arduino IDE. The host tests check all three against the check value.
// Versions 1 and 2 used CRC-8, which let about 1 in 256 frames damaged by a dropped or doubled byte
// through; CRC-16 lets about 1 in 65 536 through.
uint16_t checksum(const char* s, size_t n) {  // CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF
  uint16_t crc = 0xFFFF;
  for (size_t i = 0; i < n; ++i) {
    crc ^= (uint16_t)((uint8_t)s[i]) << 8;
    for (uint8_t b = 0; b < 8; ++b) crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
  }
  return crc;
}

uint16_t permille_to_raw(uint16_t permille) { return (uint16_t)((permille * 4095UL + 500) / 1000); }

KnobFilter::KnobFilter(float alpha, uint16_t dead_band, uint16_t mv_low, uint16_t mv_high)
    : alpha_(alpha), dead_band_(dead_band), mv_low_(mv_low), mv_high_(mv_high) {}

uint16_t KnobFilter::update(uint16_t millivolts) {
  if (smooth_ < 0) {
    smooth_ = millivolts;
  } else {
    smooth_ += alpha_ * ((float)millivolts - smooth_);
  }
  float span = (float)(mv_high_ - mv_low_);
  float p = (smooth_ - (float)mv_low_) * 1000.0f / span;
  int target = p <= 0 ? 0 : (p >= 1000 ? 1000 : (int)(p + 0.5f));
  int diff = target - (int)out_;
  if (diff < 0) diff = -diff;
  bool to_end = (target == 0 || target == 1000) && target != out_;
  if (diff >= dead_band_ || to_end) out_ = (uint16_t)target;
  return out_;
}

bool Reporter::due(uint32_t now_ms, uint16_t a, uint16_t b) const {
  return a != last_a_ || b != last_b_ || (uint32_t)(now_ms - last_ms_) >= heartbeat_ms_;
}

size_t Reporter::format(uint32_t now_ms, uint16_t a, uint16_t b, bool prototype_format, char* out, size_t cap) {
  int n;
  if (prototype_format) {
    n = snprintf(out, cap, "_34#%u#34_\n_39#%u#39_\n", (unsigned)permille_to_raw(a), (unsigned)permille_to_raw(b));
  } else {
    char body[32];
    int m = snprintf(body, sizeof body, "K,%u,%u,%u", (unsigned)seq_, (unsigned)a, (unsigned)b);
    n = snprintf(out, cap, "$%s*%04X\n", body, (unsigned)checksum(body, (size_t)m));
  }
  if (n <= 0 || (size_t)n >= cap) return 0;
  last_ms_ = now_ms;
  last_a_ = a;
  last_b_ = b;
  ++seq_;
  return (size_t)n;
}

}  // namespace kb
