/*
 * Runs the real conveyor firmware (an ATmega328P ELF) under simavr, paced to the wall clock.
 *
 *   uno_harness FIRMWARE.elf
 *
 * The UART is bridged to a pseudo-terminal linked at /tmp/simavr-uart0 (libsimavrparts' uart_pty).
 * Every change of the STEP (PD3), EN (PD5) and lamp (PD6) pins is printed on stdout as
 *   PIN <name> <level> <emulated-ms> <lag-ms>
 * with STEP changes summarised once per 10 ms of activity as "STEPS <changes> <ms> <rises> <last-rise-ms> <lag-ms>"
 * (the STEP level changes and rising edges since the last such line, and the emulated time of the latest rising
 * edge, to the cycle: a step rate measured between two lines is exact), to keep the stream small.
 * <lag-ms> is how far emulated time is behind the wall clock at that point (0 when the host keeps up; on a
 * loaded host the emulator falls behind and then runs flat out to catch up), so that a test can tell the
 * firmware's timing from the emulator's.
 * A pin's level is what the wiring sees: its output when the pin drives, else its external resistor:
 * EN has the pull-up docs/wiring.md asks for (a floating EN reads 1, driver off), the lamp a pull-down.
 * Lines on stdin drive the resume button (PD7, active low): "BUTTON 1" presses it, "BUTTON 0" releases.
 * "HANG" makes the firmware hang where it is (the instruction at the program counter becomes a jump to
 * itself, as a corrupted stack or a stuck loop would); a reset (the hardware watchdog's) undoes it.
 * Every reset of the chip is printed as "RESET <emulated-ms>".
 * Emulated time is paced to wall time (a cycle timer that sleeps), so timeouts mean real milliseconds.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "avr_ioport.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "uart_pty.h"

static avr_t *avr;
static uart_pty_t uart_pty;
static struct timespec wall_start;
static unsigned long step_count, rise_count;
static double last_rise_ms;
static double last_step_report_ms;
static void (*core_reset)(struct avr_t *);
static long hang_addr = -1;            /* flash byte address patched by HANG, -1 if none */
static uint8_t hang_saved[2];
static int reported[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
static int button_pressed;

enum { DDRD_ADDR = 0x2A, PORTD_ADDR = 0x2B };

static double emulated_ms(void) { return avr->cycle * 1000.0 / avr->frequency; }

static double wall_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (now.tv_sec - wall_start.tv_sec) * 1000.0 + (now.tv_nsec - wall_start.tv_nsec) / 1e6;
}

static double lag_ms(void) {
  double lag = wall_ms() - emulated_ms();
  return lag > 0 ? lag : 0;
}

/* The level the outside world sees on PD<bit>: the output if the pin drives, else the resistor. */
static int wired_level(int bit, int pulled_up) {
  if (avr->data[DDRD_ADDR] & (1 << bit)) return (avr->data[PORTD_ADDR] >> bit) & 1;
  return pulled_up;
}

static void report_levels(void) {
  static const char *names[] = {"EN", "LAMP"};
  static const int bits[] = {5, 6}, pullups[] = {1, 0};
  for (int i = 0; i < 2; i++) {
    int level = wired_level(bits[i], pullups[i]);
    if (level != reported[bits[i]]) {
      reported[bits[i]] = level;
      printf("PIN %s %d %.2f %.2f\n", names[i], level, emulated_ms(), lag_ms());
      fflush(stdout);
    }
  }
}

static void on_pin(struct avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq;
  (void)value;
  (void)param;
  report_levels();
}

static void on_step(struct avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq;
  (void)param;
  step_count++;
  if (value) {
    rise_count++;
    last_rise_ms = emulated_ms();
  }
}

/* The button pulls PD7 to ground when pressed; released, the pin floats to the pull-up. */
static void set_button(struct avr_t *a, int pressed) {
  button_pressed = pressed;
  avr_ioport_external_t ext = {.name = 'D', .mask = 1 << 7, .value = pressed ? 0 : (1 << 7)};
  avr_ioctl(a, AVR_IOCTL_IOPORT_SET_EXTERNAL('D'), &ext);
  avr_raise_irq(avr_io_getirq(a, AVR_IOCTL_IOPORT_GETIRQ('D'), 7), pressed ? 0 : 1);
}

/* Every millisecond of emulated time: sleep if ahead of the wall clock, report steps, read stdin. */
static avr_cycle_count_t pace(struct avr_t *a, avr_cycle_count_t when, void *param) {
  (void)param;
  double ahead = emulated_ms() - wall_ms();
  if (ahead > 0.2) {
    struct timespec ts = {0, (long)(ahead * 1e6)};
    nanosleep(&ts, NULL);
  }
  if (emulated_ms() - last_step_report_ms >= 10.0) {
    if (step_count) {
      printf("STEPS %lu %.2f %lu %.6f %.2f\n", step_count, emulated_ms(), rise_count, last_rise_ms, lag_ms());
      fflush(stdout);
    }
    step_count = 0;
    rise_count = 0;
    last_step_report_ms = emulated_ms();
  }
  report_levels();
  char line[64];
  ssize_t n = read(STDIN_FILENO, line, sizeof line - 1);
  if (n > 0) {
    line[n] = 0;
    if (strncmp(line, "BUTTON ", 7) == 0) {
      set_button(a, atoi(line + 7));
    } else if (strncmp(line, "HANG", 4) == 0 && hang_addr < 0) {
      hang_addr = (long)a->pc;
      memcpy(hang_saved, a->flash + hang_addr, 2);
      a->flash[hang_addr] = 0xFF; /* rjmp .-2 (0xCFFF, little-endian): a jump to itself */
      a->flash[hang_addr + 1] = 0xCF;
      printf("HUNG %.2f\n", emulated_ms());
      fflush(stdout);
    }
  }
  return when + a->frequency / 1000;
}

/* A reset (power-up, or the watchdog's): undo a HANG, report it, keep pacing. */
static void on_reset(struct avr_t *a) {
  if (core_reset) core_reset(a);
  if (hang_addr >= 0) {
    memcpy(a->flash + hang_addr, hang_saved, 2);
    hang_addr = -1;
  }
  set_button(a, button_pressed); /* the button is wired, not part of the chip: a reset leaves it as it is */
  printf("RESET %.2f\n", emulated_ms());
  fflush(stdout);
  avr_cycle_timer_register(a, a->frequency / 1000, pace, NULL);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s FIRMWARE.elf\n", argv[0]);
    return 2;
  }
  elf_firmware_t fw;
  memset(&fw, 0, sizeof fw);
  if (elf_read_firmware(argv[1], &fw) != 0) {
    fprintf(stderr, "uno_harness: cannot read %s\n", argv[1]);
    return 2;
  }
  avr = avr_make_mcu_by_name("atmega328p");
  if (!avr) {
    fprintf(stderr, "uno_harness: no atmega328p core in this simavr\n");
    return 2;
  }
  avr_init(avr);
  avr->frequency = 16000000;
  avr_load_firmware(avr, &fw);

  uart_pty_init(avr, &uart_pty);
  uart_pty_connect(&uart_pty, '0');

  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 3), on_step, NULL);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), IOPORT_IRQ_PIN_ALL), on_pin, NULL);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), IOPORT_IRQ_DIRECTION_ALL), on_pin,
                          NULL);
  set_button(avr, 0);
  core_reset = avr->reset;
  avr->reset = on_reset;
  report_levels(); /* power-up: every pin an input */

  fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
  clock_gettime(CLOCK_MONOTONIC, &wall_start);
  avr_cycle_timer_register(avr, avr->frequency / 1000, pace, NULL);
  printf("READY %s\n", uart_pty.pty.slavename);
  fflush(stdout);

  int state = cpu_Running;
  while (state != cpu_Done && state != cpu_Crashed) state = avr_run(avr);
  uart_pty_stop(&uart_pty);
  fprintf(stderr, "uno_harness: firmware stopped (state %d)\n", state);
  return 1;
}
