"""The pure core: manifest, lifecycle, events, scheduler. No I/O, no clock: `now` is passed in."""
