// Gutcheck conveyor: stops the belt and lights the lamp on a defect verdict from the PC.
// Arduino Uno R3 / R4. Pins: STEP 3, DIR 4, EN 5 (LOW = driver enabled), lamp 6, resume button 7.
// Non-blocking: no delay(); steps are scheduled from micros() (gc::StepClock). Protocol: docs/protocols.md.
// Compile with -DPROTOTYPE_COMPAT for the prototype's behaviour (belt runs from power-up, no watchdog).
#include "conveyor_logic.h"

// The hardware watchdog: if loop() stops running (a hang, a stuck interrupt), the chip resets within
// WATCHDOG_MS and every pin becomes an input; EN's external pull-up (docs/wiring.md) then disables the
// driver. The Uno R3 (ATmega328P) uses the AVR watchdog; the Uno R4 core's WDT library is the same idea.
#if defined(__AVR__)
#include <avr/wdt.h>
#define WATCHDOG_BEGIN() wdt_enable(WDTO_60MS)
#define WATCHDOG_FEED() wdt_reset()
#elif defined(ARDUINO_UNOR4_MINIMA) || defined(ARDUINO_UNOR4_WIFI)
#include <WDT.h>
#define WATCHDOG_BEGIN() WDT.begin(100)
#define WATCHDOG_FEED() WDT.refresh()
#else
#error "no hardware watchdog for this board: add one before using the sketch on it"
#endif

const uint8_t PIN_STEP = 3, PIN_DIR = 4, PIN_EN = 5, PIN_LAMP = 6, PIN_BUTTON = 7;

static gc::Settings make_settings() {
  gc::Settings s;
#ifdef PROTOTYPE_COMPAT
  s.prototype_compat = true;
#endif
  return s;
}

gc::Conveyor conveyor(make_settings());
gc::StepClock steps;
bool was_running = false;
const uint8_t STEP_PULSE_US = 3;  // drivers need 1-2 us high (A4988 1 us, DRV8825 1.9 us)

// One step pulse if one is due. Called more than once per loop() so that a busy part of the loop
// delays a step by less than a whole pass.
static void step_if_due() {
  if (!was_running || !steps.due(micros())) return;
  digitalWrite(PIN_STEP, HIGH);
  delayMicroseconds(STEP_PULSE_US);
  digitalWrite(PIN_STEP, LOW);
}

void setup() {
#if defined(__AVR__)
  MCUSR = 0;  // after a watchdog reset the watchdog stays on: clear its flag, then set our timeout
#endif
  WATCHDOG_BEGIN();
  digitalWrite(PIN_EN, HIGH);  // driver off until the logic says run: HIGH before the pin drives,
  pinMode(PIN_EN, OUTPUT);     // so EN never goes low for a moment at boot
  pinMode(PIN_STEP, OUTPUT);
  pinMode(PIN_DIR, OUTPUT);
  pinMode(PIN_LAMP, OUTPUT);
  pinMode(PIN_BUTTON, INPUT_PULLUP);
  digitalWrite(PIN_DIR, HIGH);
  Serial.begin(115200);
}

void loop() {
  WATCHDOG_FEED();
  step_if_due();
  unsigned long now = millis();
  while (Serial.available() > 0) {
    conveyor.feed((char)Serial.read(), now);
    step_if_due();
  }
  conveyor.button(digitalRead(PIN_BUTTON) == LOW, now);
  conveyor.tick(now);

  bool run = conveyor.running();
  digitalWrite(PIN_EN, run ? LOW : HIGH);
  digitalWrite(PIN_LAMP, conveyor.lamp() ? HIGH : LOW);
  steps.set_rate(conveyor.steps_per_s());
  if (run && !was_running) steps.start(micros());
  was_running = run;
  step_if_due();

  char out[64];
  size_t room = (size_t)Serial.availableForWrite();
  if (room > 1) {
    size_t n = conveyor.take_output(out, room + 1 < sizeof out ? room + 1 : sizeof out);
    if (n) Serial.write((const uint8_t*)out, n);
  }
  step_if_due();
}
