// Conveyor logic, shared by the Uno sketch and the host test build. No Arduino calls here:
// time comes in as milliseconds, bytes come in one at a time, replies go out through a queue.
// Protocol: docs/protocols.md (version 3).
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace gc {

const uint8_t kMaxLine = 48;  // a frame without its '$' and newline: body, '*', four check digits
const uint8_t kProtocolVersion = 3;  // sent as the last field of every status line

// CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF) of n bytes.
uint16_t checksum(const char* s, size_t n);

// Writes "$<body>*CCCC\n" into out (NUL-terminated); returns its length, 0 if it does not fit.
size_t frame(const char* body, char* out, size_t cap);

enum class Input : uint8_t { None, Frame, Compat0, Compat1, Garbage };

// Splits a byte stream into checked frames. feed() returns Frame when body() holds a valid body.
class LineReader {
 public:
  Input feed(char c);
  const char* body() const { return body_; }

 private:
  char buf_[kMaxLine + 1];
  char body_[kMaxLine + 1];
  uint8_t len_ = 0;
  bool in_frame_ = false;
  bool overflow_ = false;
};

enum class Belt : char {
  Waiting = 'W', Running = 'R', Defect = 'D', Watchdog = 'T', Command = 'C'
};

// Step scheduling from the microsecond clock (AccelStepper's idea, without its drift): each step
// falls due one interval after the previous one was *due*, not after it happened, so a late step
// (a loop() busy with a frame) does not delay every later one, and the interval keeps its fraction
// of a microsecond (1e6 / steps_per_s = q + r / steps_per_s), so the mean rate is exact at any rate.
// A step more than kMaxLateSteps intervals late (a long stall) moves the schedule to now instead of
// being made up in a burst the motor could not follow. micros() wrap-around is handled.
class StepClock {
 public:
  static const uint8_t kMaxLateSteps = 4;

  void set_rate(uint16_t steps_per_s);  // keeps the schedule; the next interval is the new one
  void start(uint32_t now_us);          // the first step is due now
  bool due(uint32_t now_us);            // true once for each step that has fallen due
  uint16_t rate() const { return rate_; }

 private:
  void advance();

  uint16_t rate_ = 0;
  uint32_t interval_us_ = 0;  // whole microseconds of 1e6 / rate_
  uint32_t remainder_ = 0;    // and the fraction, in units of 1 / rate_ microseconds
  uint32_t fraction_ = 0;     // fraction accumulated so far, below rate_
  uint32_t next_us_ = 0;
};

struct Settings {
  uint32_t watchdog_ms = 1000;
  uint32_t status_ms = 500;
  uint32_t debounce_ms = 30;
  uint16_t steps_per_s = 800;
  bool prototype_compat = false;
};

class Conveyor {
 public:
  explicit Conveyor(const Settings& s = Settings());

  void feed(char c, uint32_t now_ms);      // a byte from the PC
  void tick(uint32_t now_ms);              // call often: watchdog and periodic status
  void button(bool pressed, uint32_t now_ms);  // raw button level (true = pressed)

  Belt state() const { return state_; }
  bool running() const { return state_ == Belt::Running; }
  bool lamp() const { return lamp_; }  // on from a defect until the belt runs again (a stop keeps it on)
  uint16_t steps_per_s() const { return sps_; }
  uint16_t last_seq() const { return last_seq_; }
  uint16_t last_session() const { return last_session_; }
  uint32_t errors() const { return errors_; }
  uint32_t verdicts_acted() const { return acted_; }

  // Takes up to cap-1 queued output bytes into out (NUL-terminated); returns how many.
  size_t take_output(char* out, size_t cap);

 private:
  void on_body(const char* body, uint32_t now_ms);
  void verdict(bool defect);
  void set_state(Belt s);
  void send(const char* body, size_t keep_free = 0);
  void send_status();

  Settings settings_;
  LineReader reader_;
  Belt state_;
  uint16_t sps_;
  uint16_t last_seq_ = 0;
  uint16_t last_session_ = 0;  // 0: none yet, or the last verdict came without a session (v1 PC)
  uint32_t errors_ = 0;
  bool lamp_ = false;
  uint32_t acted_ = 0;
  uint32_t last_rx_ms_ = 0;
  uint32_t last_status_ms_ = 0;
  // Taken as held until seen released for the debounce time: a button held or stuck at power-up
  // never starts the belt.
  bool button_level_ = true;
  bool button_stable_ = true;
  uint32_t button_changed_ms_ = 0;
  char out_[192];
  size_t out_len_ = 0;
};

}  // namespace gc
