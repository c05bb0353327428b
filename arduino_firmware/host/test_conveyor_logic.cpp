// Host unit tests of the conveyor logic: framing, parsing, state machine, watchdog, button.
#include <cstring>
#include <string>

#include "../conveyor/conveyor_logic.h"
#include "check.h"

using gc::Belt;
using gc::Conveyor;

static std::string framed(const char* body) {
  char out[64];
  gc::frame(body, out, sizeof out);
  return out;
}

static void send(Conveyor& c, const std::string& s, uint32_t now) {
  for (char ch : s) c.feed(ch, now);
}

static std::string output(Conveyor& c) {
  char buf[256];
  std::string all;
  while (c.take_output(buf, sizeof buf)) all += buf;
  return all;
}

static void test_frame_and_checksum() {
  CHECK(gc::checksum("123456789", 9) == 0x29B1);  // CRC-16/CCITT-FALSE check value, as app/links/protocol.py
  CHECK(framed("H") == "$H*283C\n");  // CRC-16/CCITT-FALSE of "H"
  CHECK(framed("V,12,1") == std::string("$V,12,1*") + [] {
    char b[5];
    std::snprintf(b, 5, "%04X", gc::checksum("V,12,1", 6));
    return std::string(b);
  }() + "\n");
  char tiny[10];  // "$VERYLONG" alone is 9 bytes
  CHECK(gc::frame("VERYLONG", tiny, sizeof tiny) == 0);
}

static void test_reader_rejects_garbage() {
  gc::LineReader r;
  auto feed_all = [&](const std::string& s) {
    gc::Input last = gc::Input::None;
    int garbage = 0;
    for (char ch : s) {
      last = r.feed(ch);
      if (last == gc::Input::Garbage) ++garbage;
    }
    return std::make_pair(last, garbage);
  };
  CHECK(feed_all(framed("H")).first == gc::Input::Frame);
  CHECK(std::strcmp(r.body(), "H") == 0);
  CHECK(feed_all("$H*283D\n").first == gc::Input::Garbage);     // bad checksum
  CHECK(feed_all("$H*283c\n").first == gc::Input::Garbage);     // lower-case check digits
  CHECK(feed_all("$H*FF\n").first == gc::Input::Garbage);       // a version 2 (CRC-8) frame
  CHECK(feed_all("$H\n").first == gc::Input::Garbage);          // no checksum
  CHECK(feed_all("$" + std::string(60, 'A') + "*0000\n").first == gc::Input::Garbage);  // overlong
  CHECK(feed_all("$V,1" + framed("H")).second == 1);            // cut frame, then a good one
  CHECK(std::strcmp(r.body(), "H") == 0);
  CHECK(r.feed('1') == gc::Input::Compat1);
  CHECK(r.feed('0') == gc::Input::Compat0);
  CHECK(r.feed('x') == gc::Input::Garbage);
}

static void test_waits_for_resume_then_runs() {
  Conveyor c;
  CHECK(c.state() == Belt::Waiting);
  CHECK(!c.running());
  send(c, framed("R"), 10);
  CHECK(c.running());
  CHECK(output(c).find("$E,R*") != std::string::npos);
}

static void test_defect_stops_and_acks_once() {
  Conveyor c;
  send(c, framed("R"), 0);
  send(c, framed("V,1,0,77"), 5);
  CHECK(c.running());
  CHECK(output(c).find(framed("A,1")) != std::string::npos);
  send(c, framed("V,2,1,77"), 10);
  CHECK(c.state() == Belt::Defect);
  CHECK(c.lamp());
  std::string out = output(c);
  CHECK(out.find(framed("A,2")) != std::string::npos);
  CHECK(out.find(framed("E,D")) != std::string::npos);
  CHECK(c.verdicts_acted() == 2);
  send(c, framed("R"), 20);
  send(c, framed("V,2,1,77"), 30);  // a resend of seq 2: acknowledged, not acted on
  CHECK(c.running());
  CHECK(c.verdicts_acted() == 2);
  CHECK(output(c).find(framed("A,2")) != std::string::npos);
}

// Issue 13 item 1: the PC restarts (new session id) and its first verdict, seq 1, is a defect,
// while the last verdict of the old session was also seq 1. It must stop the belt.
static void test_restarted_pc_defect_with_reused_seq_stops_the_belt() {
  Conveyor c;
  send(c, framed("R"), 0);
  send(c, framed("V,1,0,4242"), 5);  // old session ends at seq 1
  CHECK(c.running());
  send(c, framed("V,1,1,917"), 10);  // new session, seq 1 again, a defect
  CHECK(c.state() == Belt::Defect);
  CHECK(c.verdicts_acted() == 2);
  CHECK(c.last_session() == 917);
}

// A version 1 PC sends no session: every verdict is acted on (never mistaken for a resend).
static void test_verdict_without_session_is_always_acted_on() {
  Conveyor c;
  send(c, framed("R"), 0);
  send(c, framed("V,3,1"), 5);
  CHECK(c.state() == Belt::Defect);
  send(c, framed("R"), 10);
  send(c, framed("V,3,1"), 15);
  CHECK(c.state() == Belt::Defect);
  CHECK(c.verdicts_acted() == 2);
}

// Issue 13 item 4: fields a later version adds at the end are ignored, not garbage.
static void test_unknown_extra_fields_are_ignored() {
  Conveyor c;
  send(c, framed("R,later"), 0);
  CHECK(c.running());
  send(c, framed("V,29,0,5,extra,fields"), 1);
  CHECK(output(c).find(framed("A,29")) != std::string::npos);
  send(c, framed("V,30,0,extra"), 2);  // an unreadable session: acted on and acknowledged
  CHECK(output(c).find(framed("A,30")) != std::string::npos);
  send(c, framed("H,1"), 3);
  send(c, framed("P,900,x"), 4);
  CHECK(c.steps_per_s() == 900);
  CHECK(c.errors() == 0);
  CHECK(c.verdicts_acted() == 2);
}

static void test_bad_fields_count_as_errors() {
  Conveyor c;
  send(c, framed("R"), 0);
  const char* bad[] = {"V,0,1", "V,70000,1", "V,5,2", "V,5", "V,,1", "V,5,1x", "P,10", "P,9000", "Z", "HX"};
  for (const char* b : bad) send(c, framed(b), 1);
  CHECK(c.errors() == 10);
  CHECK(c.running());
  CHECK(c.verdicts_acted() == 0);
}

static void test_watchdog_stops_and_stays_stopped() {
  Conveyor c;
  send(c, framed("R"), 0);
  for (uint32_t t = 0; t <= 3000; t += 200) {
    send(c, framed("H"), t);
    c.tick(t);
  }
  CHECK(c.running());
  c.tick(3000 + 1000);
  CHECK(c.running());
  c.tick(3000 + 1001);
  CHECK(c.state() == Belt::Watchdog);
  CHECK(output(c).find(framed("E,T")) != std::string::npos);
  send(c, framed("H"), 5000);
  c.tick(5000);
  CHECK(c.state() == Belt::Watchdog);  // heartbeats alone do not restart the belt
  send(c, framed("R"), 5100);
  CHECK(c.running());
}

static void test_button_debounced_resume() {
  Conveyor c;
  c.button(false, 0);
  c.button(false, 40);  // seen released after power-up
  send(c, framed("R"), 0);
  send(c, framed("V,1,1"), 1);
  CHECK(c.state() == Belt::Defect);
  c.button(true, 100);
  c.button(false, 105);  // bounce
  c.button(true, 110);
  c.button(true, 130);
  CHECK(c.state() == Belt::Defect);  // 20 ms stable: not yet
  c.button(true, 141);
  CHECK(c.running());
}

// Issue 13 item 5: a button held (or stuck) at power-up never starts the belt, and a press in the
// power-up state (no PC yet) does nothing; after a release, a press resumes from a stop.
static void test_held_button_at_power_up_does_not_start_the_belt() {
  Conveyor c;
  for (uint32_t t = 0; t <= 2000; t += 5) c.button(true, t);
  CHECK(c.state() == Belt::Waiting);
  for (uint32_t t = 2005; t <= 2100; t += 5) c.button(false, t);
  for (uint32_t t = 2105; t <= 2200; t += 5) c.button(true, t);
  CHECK(c.state() == Belt::Waiting);  // no resume from power-up: only the PC starts the belt
  send(c, framed("X"), 2300);
  for (uint32_t t = 2305; t <= 2400; t += 5) c.button(false, t);
  for (uint32_t t = 2405; t <= 2500; t += 5) c.button(true, t);
  CHECK(c.running());  // from a stop, a press resumes
}

static void test_status_and_speed() {
  Conveyor c;
  send(c, framed("P,1200"), 0);
  CHECK(c.steps_per_s() == 1200);
  CHECK(output(c).find(framed("S,W,1200,0,0,3")) != std::string::npos);  // last field: protocol version
  c.tick(500);
  CHECK(output(c).find("$S,W,1200") != std::string::npos);
  send(c, framed("X"), 600);
  CHECK(c.state() == Belt::Command);
}

static void test_prototype_compat() {
  gc::Settings s;
  s.prototype_compat = true;
  Conveyor c(s);
  CHECK(c.running());
  c.tick(60000);
  CHECK(c.running());  // no watchdog in compatibility mode
  c.feed('0', 60001);
  CHECK(c.running());
  c.feed('1', 60002);
  CHECK(c.state() == Belt::Defect);
  CHECK(output(c).find("$A") == std::string::npos);  // the prototype had no acknowledgement
}

static void test_bare_verdict_bytes_need_compat_mode() {
  Conveyor c;
  send(c, framed("R"), 0);
  send(c, "V,12,1*0000\n", 1);  // a frame whose '$' was lost: its '1's must not count as verdicts
  c.feed('1', 2);
  CHECK(c.running());
  CHECK(c.verdicts_acted() == 0);
  CHECK(c.errors() >= 2);
}

// Issue 13 item 7: a flood of status requests must not crowd out an acknowledgement.
static void test_status_flood_never_drops_an_acknowledgement() {
  Conveyor c;
  send(c, framed("R"), 0);
  for (int i = 0; i < 200; ++i) send(c, framed("Q"), 1);  // nothing drained: the queue is full of status
  send(c, framed("V,7,1,3"), 2);
  send(c, framed("V,8,0,3"), 3);
  std::string out = output(c);
  CHECK(out.find(framed("A,7")) != std::string::npos);
  CHECK(out.find(framed("A,8")) != std::string::npos);
  CHECK(out.find(framed("E,D")) != std::string::npos);
}

static void test_output_queue_never_overflows() {
  Conveyor c;
  for (int i = 0; i < 100; ++i) send(c, framed("Q"), i);
  char buf[512];
  size_t n = c.take_output(buf, sizeof buf);
  CHECK(n > 0 && n < 192);
  CHECK(buf[n - 1] == '\n');
}

// Steps counted over `seconds` of a loop that polls every `poll_us`, with a `stall_us` pause every
// `stall_every_us` (a frame being handled).
static double measured_rate(uint16_t rate, uint32_t start_us, uint32_t poll_us, uint32_t stall_us,
                            uint32_t stall_every_us, double seconds) {
  gc::StepClock clock;
  clock.set_rate(rate);
  clock.start(start_us);
  uint32_t now = start_us, next_stall = start_us + stall_every_us;
  const uint64_t total = (uint64_t)(seconds * 1e6);
  unsigned long steps = 0;
  for (uint64_t elapsed = 0; elapsed < total; elapsed += poll_us, now += poll_us) {
    if (stall_every_us && (int32_t)(now - next_stall) >= 0) {
      now += stall_us;
      elapsed += stall_us;
      next_stall += stall_every_us;
    }
    while (clock.due(now)) ++steps;
  }
  return steps / seconds;
}

static void test_step_clock_keeps_the_mean_rate() {
  const uint16_t rates[] = {50, 800, 2000, 3001, 4000};
  for (uint16_t r : rates) {
    double quiet = measured_rate(r, 0, 20, 0, 0, 10.0);
    // a 400 us stall every 2 ms (frames arriving back to back), across the micros() wrap-around
    double busy = measured_rate(r, 0xFFFFFFFFUL - 3000000UL, 60, 400, 2000, 10.0);
    std::printf("step clock %u steps/s: %.2f quiet, %.2f with stalls\n", (unsigned)r, quiet, busy);
    CHECK(quiet > r * 0.999 && quiet < r * 1.001);
    CHECK(busy > r * 0.99 && busy < r * 1.01);
  }
  // a long stall (the belt stopped, a hang) does not come back as a burst of steps
  gc::StepClock clock;
  clock.set_rate(1000);
  clock.start(0);
  int burst = 0;
  while (clock.due(1000000)) ++burst;
  CHECK(burst == 1);
}

int main() {
  test_step_clock_keeps_the_mean_rate();
  test_frame_and_checksum();
  test_reader_rejects_garbage();
  test_waits_for_resume_then_runs();
  test_defect_stops_and_acks_once();
  test_restarted_pc_defect_with_reused_seq_stops_the_belt();
  test_verdict_without_session_is_always_acted_on();
  test_unknown_extra_fields_are_ignored();
  test_bad_fields_count_as_errors();
  test_watchdog_stops_and_stays_stopped();
  test_button_debounced_resume();
  test_held_button_at_power_up_does_not_start_the_belt();
  test_status_and_speed();
  test_prototype_compat();
  test_bare_verdict_bytes_need_compat_mode();
  test_status_flood_never_drops_an_acknowledgement();
  test_output_queue_never_overflows();
  return check_report("conveyor logic");
}
