// Knob box logic, shared by the ESP32 sketch and the host test build. No Arduino calls here.
// Protocol: docs/protocols.md (version 3).
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace kb {

// One potentiometer: calibrated millivolts in, a steady 0..1000 permille position out.
// An exponential filter takes out ADC noise; a dead band keeps a knob left alone from moving;
// the ends snap, so 0 and 1000 are reachable.
class KnobFilter {
 public:
  KnobFilter(float alpha = 0.15f, uint16_t dead_band = 4, uint16_t mv_low = 150, uint16_t mv_high = 3150);
  uint16_t update(uint16_t millivolts);
  uint16_t position() const { return out_; }

 private:
  float alpha_;
  uint16_t dead_band_, mv_low_, mv_high_;
  float smooth_ = -1.0f;
  uint16_t out_ = 0;
};

// Decides when a line is due (a change, or the heartbeat period passed) and formats it.
class Reporter {
 public:
  explicit Reporter(uint32_t heartbeat_ms = 500) : heartbeat_ms_(heartbeat_ms) {}
  bool due(uint32_t now_ms, uint16_t a, uint16_t b) const;
  // Writes the line(s) for positions a, b into out; marks them sent. Returns the length (0: no room).
  size_t format(uint32_t now_ms, uint16_t a, uint16_t b, bool prototype_format, char* out, size_t cap);

 private:
  uint32_t heartbeat_ms_;
  uint32_t last_ms_ = 0;
  int32_t last_a_ = -1, last_b_ = -1;
  uint8_t seq_ = 0;
};

uint16_t checksum(const char* s, size_t n);  // CRC-16/CCITT-FALSE: polynomial 0x1021, initial 0xFFFF
uint16_t permille_to_raw(uint16_t permille);  // for the prototype's 12-bit lines

}  // namespace kb
