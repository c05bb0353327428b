"""Serial links to the knob box and the conveyor (protocols in docs/protocols.md)."""
