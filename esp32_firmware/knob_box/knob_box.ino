// Gutcheck knob box: two potentiometers (GPIO34, GPIO39: ADC1, input-only) sent as 0..1000 permille
// over Classic Bluetooth SPP (BluetoothSerial) and, for the bench, the same lines on USB serial.
// Original ESP32 only: the ESP32-S2, S3, C3 and C6 have no Classic Bluetooth (no SPP).
// Build with -DPROTOTYPE_FORMAT to send the prototype's _34#<raw>#34_ / _39#<raw>#39_ lines.
// Non-blocking loop; protocol in docs/protocols.md.
#include <BluetoothSerial.h>

#include "knob_logic.h"

#ifndef KNOB_BOX_NAME
#define KNOB_BOX_NAME "Gutcheck-Knobs"
#endif
#ifdef PROTOTYPE_FORMAT
const bool kPrototypeFormat = true;
#else
const bool kPrototypeFormat = false;
#endif

const int PIN_KNOB_A = 34, PIN_KNOB_B = 39, PIN_LED = 2;
const uint32_t SAMPLE_EVERY_MS = 10;
const int SAMPLES = 16;  // multisampling of calibrated millivolts per reading

BluetoothSerial bt;
kb::KnobFilter knob_a, knob_b;
kb::Reporter reporter;
uint32_t last_sample_ms = 0;

static uint16_t read_mv(int pin) {
  uint32_t sum = 0;
  for (int i = 0; i < SAMPLES; ++i) sum += analogReadMilliVolts(pin);  // eFuse-calibrated
  return (uint16_t)(sum / SAMPLES);
}

void setup() {
  Serial.begin(115200);
  analogSetPinAttenuation(PIN_KNOB_A, ADC_11db);
  analogSetPinAttenuation(PIN_KNOB_B, ADC_11db);
  pinMode(PIN_LED, OUTPUT);
  bt.begin(KNOB_BOX_NAME);
}

void loop() {
  uint32_t now = millis();
  if (now - last_sample_ms < SAMPLE_EVERY_MS) return;
  last_sample_ms = now;
  uint16_t a = knob_a.update(read_mv(PIN_KNOB_A));
  uint16_t b = knob_b.update(read_mv(PIN_KNOB_B));
  // Status LED: steady when a Bluetooth client is connected, slow blink while waiting.
  digitalWrite(PIN_LED, bt.hasClient() ? HIGH : ((now / 500) % 2 ? HIGH : LOW));
  if (!reporter.due(now, a, b)) return;
  char line[48];
  size_t n = reporter.format(now, a, b, kPrototypeFormat, line, sizeof line);
  if (n == 0) return;
  Serial.write((const uint8_t*)line, n);
  if (bt.hasClient()) bt.write((const uint8_t*)line, n);
}
