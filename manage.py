#!/usr/bin/env python
"""Django's command-line utility for KerasUI."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")
    from django.core.management import execute_from_command_line

    from kerasui.config import stop_on_bad_settings

    stop_on_bad_settings()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
