"""The capture window (ttkbootstrap): a thin view over a CaptureSession.

A worker thread runs the session and puts events on a queue; the Tk thread polls the queue with
after() and never waits on the camera or the disk.
"""

from __future__ import annotations

import queue
import threading
import time
import tkinter as tk
from tkinter import messagebox

import cv2
import numpy as np
import ttkbootstrap as ttk
from PIL import Image, ImageTk

from capture.errors import GutcheckError
from capture.session import MODES, CaptureEvent, CaptureSession, DatasetWriter
from capture.sources import open_source

POLL_MS = 30


def to_photo(image: np.ndarray, width: int) -> ImageTk.PhotoImage:
    """A BGR image scaled to `width` as a Tk photo."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (width, max(1, int(h * width / w))), interpolation=cv2.INTER_AREA)
    return ImageTk.PhotoImage(Image.fromarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB)))


class SessionWorker:
    """Runs session.step() in a thread; events go to `events`. Can be paused and swapped."""

    def __init__(self, session: CaptureSession):
        self.session = session
        self.events: queue.Queue[CaptureEvent | str] = queue.Queue(maxsize=64)
        self.running = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="capture-worker")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.running.is_set():
                self.running.wait(0.1)
                continue
            try:
                event = self.session.step()
            except GutcheckError as exc:
                self._put(f"error: {exc}")
                self.running.clear()
                continue
            if event is None:
                if self.session.source.finite:
                    self._put("the source has ended")
                    self.running.clear()
                continue
            if event.saved or event.rejected:
                self.events.put(event)  # these must not be dropped
            else:
                self._put(event)  # live frames may be dropped when the view lags
            time.sleep(0.001)

    def _put(self, item) -> None:
        try:
            self.events.put_nowait(item)
        except queue.Full:
            pass

    def close(self) -> None:
        self._stop.set()
        self.running.set()
        self._thread.join(timeout=2)
        self.session.source.close()


class CaptureWindow:
    """Live view, source picker, start/stop, storing switch, mode picker, counter, last capture,
    quality messages, delete training images (to the trash) with confirmation and undo."""

    def __init__(self, root: tk.Tk, session: CaptureSession, count: int = 0, confirm=messagebox.askyesno):
        self.root, self.count, self.confirm = root, count, confirm
        self.worker = SessionWorker(session)
        self.undo_handle = None
        self._photos: dict[str, ImageTk.PhotoImage] = {}
        root.title(f"Gutcheck capture — {session.writer.root.name}")

        top = ttk.Frame(root, padding=8)
        top.pack(fill="x")
        ttk.Label(top, text="Source").pack(side="left")
        self.source_var = tk.StringVar(value=session.source.name)
        ttk.Entry(top, textvariable=self.source_var, width=36).pack(side="left", padx=4)
        ttk.Button(top, text="Open", command=self.open_source, bootstyle="secondary").pack(side="left")
        self.start_button = ttk.Button(top, text="Start camera", command=self.toggle, bootstyle="success")
        self.start_button.pack(side="left", padx=8)
        ttk.Label(top, text="Mode").pack(side="left")
        self.mode_var = tk.StringVar(value=session.settings.mode)
        mode = ttk.Combobox(top, textvariable=self.mode_var, values=MODES, width=9, state="readonly")
        mode.pack(side="left", padx=4)
        mode.bind("<<ComboboxSelected>>", lambda e: self._set_mode())
        self.store_var = tk.BooleanVar(value=session.settings.storing)
        ttk.Checkbutton(top, text="Store images", variable=self.store_var, bootstyle="round-toggle",
                        command=self._set_storing).pack(side="left", padx=8)
        ttk.Button(top, text="Capture", command=session.request_capture, bootstyle="primary").pack(side="left")

        body = ttk.Frame(root, padding=(8, 0))
        body.pack(fill="both", expand=True)
        self.live = ttk.Label(body, text="camera stopped", anchor="center", width=60)
        self.live.pack(side="left", padx=4, pady=4)
        side = ttk.Frame(body)
        side.pack(side="left", fill="y", padx=8)
        self.counter = ttk.Label(side, text="0 images", font=("TkDefaultFont", 20, "bold"))
        self.counter.pack(anchor="w")
        self.target = ttk.Label(side, text=f"target {count}" if count else "")
        self.target.pack(anchor="w")
        ttk.Label(side, text="Last capture").pack(anchor="w", pady=(12, 0))
        self.thumb = ttk.Label(side, text="–")
        self.thumb.pack(anchor="w")
        self.rejected_label = ttk.Label(side, text="rejected: none", wraplength=260, justify="left")
        self.rejected_label.pack(anchor="w", pady=(12, 0))
        self.delete_button = ttk.Button(side, text="Delete training images…", command=self.delete_images,
                                        bootstyle="danger-outline")
        self.delete_button.pack(anchor="w", pady=(16, 2), fill="x")
        self.undo_button = ttk.Button(side, text="Undo delete", command=self.undo_delete, state="disabled",
                                      bootstyle="warning-outline")
        self.undo_button.pack(anchor="w", fill="x")
        self.status = ttk.Label(root, text="ready", padding=8, bootstyle="inverse-secondary")
        self.status.pack(fill="x", side="bottom")
        root.protocol("WM_DELETE_WINDOW", self.close)
        root.after(POLL_MS, self.poll)

    @property
    def session(self) -> CaptureSession:
        return self.worker.session

    def toggle(self) -> None:
        if self.worker.running.is_set():
            self.worker.running.clear()
            self.start_button.configure(text="Start camera", bootstyle="success")
            self.status.configure(text="camera stopped")
        else:
            self.worker.running.set()
            self.start_button.configure(text="Stop camera", bootstyle="danger")
            self.status.configure(text=f"running: {self.session.source.name}")

    def open_source(self) -> None:
        try:
            source = open_source(self.source_var.get())
        except GutcheckError as exc:
            self.status.configure(text=f"error: {exc}", bootstyle="inverse-danger")
            return
        was_running = self.worker.running.is_set()
        self.worker.close()
        old = self.session
        self.worker = SessionWorker(CaptureSession(source, old.writer, old.settings))
        if was_running:
            self.worker.running.set()
        self.status.configure(text=f"opened {source.name}", bootstyle="inverse-secondary")

    def _set_mode(self) -> None:
        self.session.settings.mode = self.mode_var.get()

    def _set_storing(self) -> None:
        self.session.settings.storing = bool(self.store_var.get())

    def delete_images(self) -> None:
        writer: DatasetWriter = self.session.writer
        n = len(list(writer.folder.glob("*.png"))) if writer.folder.is_dir() else 0
        if not n:
            self.status.configure(text="no training images to delete")
            return
        if not self.confirm("Delete training images",
                            f"Move {n} images of {writer.folder} to the trash?\n(Undo is possible.)"):
            return
        self.undo_handle = writer.trash_images()
        self.undo_button.configure(state="normal")
        self.status.configure(text=f"moved {n} images to {self.undo_handle[0]} — Undo puts them back")

    def undo_delete(self) -> None:
        if self.undo_handle is None:
            return
        try:
            DatasetWriter.undo_trash(self.undo_handle)
        except GutcheckError as exc:
            self.status.configure(text=f"error: {exc}", bootstyle="inverse-danger")
            return
        self.status.configure(text=f"restored {self.undo_handle[1]}")
        self.undo_handle = None
        self.undo_button.configure(state="disabled")

    def poll(self) -> None:
        latest_frame = None
        for _ in range(32):
            try:
                item = self.worker.events.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, str):
                self.status.configure(text=item, bootstyle="inverse-warning")
                self.start_button.configure(text="Start camera", bootstyle="success")
                continue
            latest_frame = item.frame.image
            if item.saved is not None:
                self._photos["thumb"] = to_photo(item.image, 200)
                self.thumb.configure(image=self._photos["thumb"], text="")
            if item.rejected:
                self.status.configure(text=f"rejected frame {item.frame.index}: {item.rejected}",
                                      bootstyle="inverse-warning")
        if latest_frame is not None:
            self._photos["live"] = to_photo(latest_frame, 480)
            self.live.configure(image=self._photos["live"], text="")
        s = self.session
        self.counter.configure(text=f"{s.captured} images")
        self.rejected_label.configure(text="rejected: " + (", ".join(f"{n} {why}" for why, n in s.rejected.items())
                                                           or "none") + f"\nfailed reads: {s.source.failed_reads}")
        if self.count and s.captured >= self.count and self.worker.running.is_set():
            self.toggle()
            self.status.configure(text=f"done: {s.captured} images captured")
        self.root.after(POLL_MS, self.poll)

    def close(self) -> None:
        self.worker.close()
        self.root.destroy()


def run_capture_window(session: CaptureSession, count: int = 0) -> int:
    root = ttk.Window(themename="flatly")
    CaptureWindow(root, session, count)
    root.mainloop()
    return 0
