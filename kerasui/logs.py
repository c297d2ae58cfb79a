"""Logging of KerasUI's processes (settings.LOGGING): every record with its time, level and logger."""

import logging
import sys

FORMAT = "{asctime} {levelname} {name}: {message}"
# What the training process tells about its run, written to its standard output beside Keras' progress:
# the run's log file (the runner sends the process's output there; the `train` command copies it there).
RUN_LOGGER = "kerasui.run"


class ConsoleHandler(logging.StreamHandler):
    """Writes to the standard stream as it is when a record is written, not as it was when logging was set up:
    the `train` command points the streams at the run's log file too, and tests capture them."""

    def __init__(self, stream_name: str = "stderr") -> None:
        self.stream_name = stream_name
        super().__init__()

    @property
    def stream(self):
        stream = getattr(sys, self.stream_name)
        # A Celery worker points the standard streams at a logger (its LoggingProxy): a record written there
        # would be logged again, and Celery drops it to break the loop. Write to the real stream instead.
        if isinstance(getattr(stream, "logger", None), logging.Logger):
            return getattr(sys, f"__{self.stream_name}__")
        return stream

    @stream.setter
    def stream(self, value) -> None:
        pass  # the stream is always the current one
