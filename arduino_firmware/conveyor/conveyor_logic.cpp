// Conveyor logic: see conveyor_logic.h and docs/protocols.md.
#include "conveyor_logic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace gc {

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

static char hex_digit(uint8_t v) { return v < 10 ? '0' + v : 'A' + (v - 10); }

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // upper-case only, as the document says: "1f" is not a checksum
}

size_t frame(const char* body, char* out, size_t cap) {
  size_t n = strlen(body);
  if (n + 8 > cap) return 0;
  uint16_t cs = checksum(body, n);
  out[0] = '$';
  memcpy(out + 1, body, n);
  out[n + 1] = '*';
  for (uint8_t i = 0; i < 4; ++i) out[n + 2 + i] = hex_digit((cs >> (12 - 4 * i)) & 15);
  out[n + 6] = '\n';
  out[n + 7] = 0;
  return n + 7;
}

Input LineReader::feed(char c) {
  if (c == '$') {  // a new frame starts; anything unfinished before it was garbage
    bool dropped = in_frame_ && len_ > 0;
    in_frame_ = true;
    overflow_ = false;
    len_ = 0;
    return dropped ? Input::Garbage : Input::None;
  }
  if (!in_frame_) {
    if (c == '0') return Input::Compat0;
    if (c == '1') return Input::Compat1;
    if (c == '\n' || c == '\r') return Input::None;
    return Input::Garbage;
  }
  if (c == '\r') return Input::None;
  if (c != '\n') {
    if (len_ >= kMaxLine) {
      overflow_ = true;
    } else {
      buf_[len_++] = c;
    }
    return Input::None;
  }
  in_frame_ = false;
  if (overflow_ || len_ < 6 || buf_[len_ - 5] != '*') return Input::Garbage;
  size_t n = len_ - 5;
  uint16_t sent = 0;
  for (uint8_t i = 0; i < 4; ++i) {
    int v = hex_value(buf_[n + 1 + i]);
    if (v < 0) return Input::Garbage;
    sent = (uint16_t)(sent * 16 + v);
  }
  if (checksum(buf_, n) != sent) return Input::Garbage;
  for (size_t i = 0; i < n; ++i) {
    if (buf_[i] == '*' || (uint8_t)buf_[i] < 32 || (uint8_t)buf_[i] > 126) return Input::Garbage;
  }
  memcpy(body_, buf_, n);
  body_[n] = 0;
  return Input::Frame;
}

// Parses a decimal number of at most 5 digits that ends at ',' or NUL; -1 if malformed.
static long parse_uint(const char* s, const char** end) {
  long v = 0;
  int digits = 0;
  while (*s >= '0' && *s <= '9') {
    v = v * 10 + (*s - '0');
    ++s;
    if (++digits > 5) return -1;
  }
  if (digits == 0 || (*s != ',' && *s != 0)) return -1;
  *end = s;
  return v;
}

Conveyor::Conveyor(const Settings& s)
    : settings_(s),
      state_(s.prototype_compat ? Belt::Running : Belt::Waiting),
      sps_(s.steps_per_s) {}

// Queues one framed line. Status lines pass `keep_free`: they leave room for the acknowledgements
// and state events behind them, so a flood of status requests can never crowd out an acknowledgement
// (a status that does not fit is dropped: the next periodic one repeats the news).
void Conveyor::send(const char* body, size_t keep_free) {
  char line[kMaxLine + 8];
  size_t n = frame(body, line, sizeof line);
  if (n == 0 || out_len_ + n + keep_free >= sizeof out_) return;
  memcpy(out_ + out_len_, line, n);
  out_len_ += n;
}

size_t Conveyor::take_output(char* out, size_t cap) {
  if (cap == 0) return 0;
  size_t n = out_len_ < cap - 1 ? out_len_ : cap - 1;
  memcpy(out, out_, n);
  out[n] = 0;
  memmove(out_, out_ + n, out_len_ - n);
  out_len_ -= n;
  return n;
}

void Conveyor::send_status() {
  char body[40];
  snprintf(body, sizeof body, "S,%c,%u,%u,%lu,%u", (char)state_, (unsigned)sps_, (unsigned)last_seq_,
           (unsigned long)errors_, (unsigned)kProtocolVersion);
  send(body, 3 * 16);  // room for three acknowledgements or events ("$A,65535*CCCC\n" is 14 bytes)
}

void Conveyor::set_state(Belt s) {
  if (s == Belt::Running) lamp_ = false;
  if (s == state_) return;
  state_ = s;
  char body[4] = {'E', ',', (char)s, 0};
  send(body);
}

void Conveyor::verdict(bool defect) {
  ++acted_;
  if (defect) {
    lamp_ = true;
    set_state(Belt::Defect);
  }
}

void Conveyor::feed(char c, uint32_t now_ms) {
  Input in = reader_.feed(c);
  switch (in) {
    case Input::None:
      return;
    case Input::Garbage:
      ++errors_;
      return;
    case Input::Compat0:
    case Input::Compat1:
      // Only in compatibility mode: in a framed session a bare '1' is a frame that lost its '$'.
      if (!settings_.prototype_compat) {
        ++errors_;
        return;
      }
      last_rx_ms_ = now_ms;
      verdict(in == Input::Compat1);
      return;
    case Input::Frame:
      on_body(reader_.body(), now_ms);
      return;
  }
}

// True if the message letter stands alone or is followed by fields: "H", "H,..." (a later protocol
// version may add fields at the end of any message; this one ignores what it does not know).
static bool bare(const char* b) { return b[1] == 0 || b[1] == ','; }

// Parses "V,<seq>,<d>[,<session>[,...]]". The session is the PC's random id for its connection
// (1-65535); a verdict without one (a version 1 PC) or with one this version cannot read is
// always acted on, so a defect is never mistaken for a resend.
static bool parse_verdict(const char* b, uint16_t* seq, bool* defect, uint16_t* session) {
  const char* end = b;
  long s = parse_uint(b + 2, &end);
  if (s < 1 || s > 65535 || *end != ',') return false;
  long d = parse_uint(end + 1, &end);
  if (d != 0 && d != 1) return false;
  *seq = (uint16_t)s;
  *defect = d == 1;
  *session = 0;
  if (*end == ',') {
    long id = parse_uint(end + 1, &end);
    if (id >= 1 && id <= 65535) *session = (uint16_t)id;
  }
  return true;
}

void Conveyor::on_body(const char* b, uint32_t now_ms) {
  const char* end = b;
  bool ok = true;
  if (b[0] == 'H' && bare(b)) {
  } else if (b[0] == 'V' && b[1] == ',') {
    uint16_t seq, session;
    bool defect;
    if (parse_verdict(b, &seq, &defect, &session)) {
      // Not acted on twice: the same verdict resent by the same PC connection. A new connection
      // (a restarted PC, a reopened port) has a new session id, so its seq 1 is always new.
      bool resend = session != 0 && session == last_session_ && seq == last_seq_;
      last_seq_ = seq;
      last_session_ = session;
      if (!resend) verdict(defect);
      char body[12];
      snprintf(body, sizeof body, "A,%u", (unsigned)seq);
      send(body);
    } else {
      ok = false;
    }
  } else if (b[0] == 'R' && bare(b)) {
    if (state_ == Belt::Running) {
      send("E,R");  // answered even when it changes nothing: the PC learns the state either way
    }
    set_state(Belt::Running);
  } else if (b[0] == 'X' && bare(b)) {
    set_state(Belt::Command);
  } else if (b[0] == 'Q' && bare(b)) {
    send_status();
  } else if (b[0] == 'P' && b[1] == ',') {
    long sps = parse_uint(b + 2, &end);
    if (sps >= 50 && sps <= 4000 && (*end == 0 || *end == ',')) {
      sps_ = (uint16_t)sps;
      send_status();
    } else {
      ok = false;
    }
  } else {
    ok = false;
  }
  if (ok) {
    last_rx_ms_ = now_ms;
  } else {
    ++errors_;
  }
}

void Conveyor::tick(uint32_t now_ms) {
  if (!settings_.prototype_compat && state_ == Belt::Running &&
      (uint32_t)(now_ms - last_rx_ms_) > settings_.watchdog_ms) {
    set_state(Belt::Watchdog);
  }
  if ((uint32_t)(now_ms - last_status_ms_) >= settings_.status_ms) {
    last_status_ms_ = now_ms;
    send_status();
  }
}

void Conveyor::button(bool pressed, uint32_t now_ms) {
  if (pressed != button_level_) {
    button_level_ = pressed;
    button_changed_ms_ = now_ms;
    return;
  }
  if (pressed != button_stable_ && (uint32_t)(now_ms - button_changed_ms_) >= settings_.debounce_ms) {
    button_stable_ = pressed;
    // Resume only from a stop (defect, watchdog, command). From power-up (W) only the PC starts
    // the belt: a press with no PC attached would run it unwatched until the watchdog fires.
    if (pressed && (state_ == Belt::Defect || state_ == Belt::Watchdog || state_ == Belt::Command)) {
      last_rx_ms_ = now_ms;  // give the PC a full watchdog period after a manual restart
      set_state(Belt::Running);
    }
  }
}

void StepClock::set_rate(uint16_t steps_per_s) {
  if (steps_per_s == rate_ || steps_per_s == 0) return;
  rate_ = steps_per_s;
  interval_us_ = 1000000UL / rate_;
  remainder_ = 1000000UL % rate_;
  fraction_ = 0;
}

void StepClock::start(uint32_t now_us) {
  next_us_ = now_us;
  fraction_ = 0;
}

void StepClock::advance() {
  next_us_ += interval_us_;
  fraction_ += remainder_;
  if (fraction_ >= rate_) {
    fraction_ -= rate_;
    next_us_ += 1;
  }
}

bool StepClock::due(uint32_t now_us) {
  if (rate_ == 0 || (int32_t)(now_us - next_us_) < 0) return false;
  if (now_us - next_us_ > (uint32_t)kMaxLateSteps * interval_us_) start(now_us);  // a stall: no burst
  advance();
  return true;
}

}  // namespace gc
