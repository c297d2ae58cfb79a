"""Floods from one account against a real two-worker gunicorn with the project's configuration (issue 30),
with an administrator's cheap request sent beside them: the floods are refused (413/429) from the images'
headers or by the explanation slots, and the cheap request keeps being answered. Timing is measured by
`python -m bench.abuse`, not asserted here."""

import os
import signal

from bench.abuse import ROOT, flood, floods, prepare, start_server
from bench.common import wait_for
from tests.e2e.test_gunicorn import free_port


def test_pixel_and_explanation_floods_are_refused_while_a_cheap_request_is_answered(tmp_path):
    tokens = prepare(ROOT, tmp_path)
    attacks = floods(tokens, batch=8)
    port = free_port()
    server = start_server(ROOT, tmp_path, port)
    try:
        wait_for(port)
        # A zip is an import job (202); while one of a dataset's imports is active the next is a 409.
        for name, refused in (("png_batches", {"413"}), ("gif_bombs", {"413"}), ("png_zip", {"202", "409"})):
            row = flood(port, tokens["admin"], attacks[name], seconds=3, attackers=4)
            assert set(row["attack_statuses"]) <= refused, (name, row)
            assert row["cheap_count"] > 0 and set(row["cheap_statuses"]) == {"200"}, (name, row)
        explain = flood(port, tokens["admin"], attacks["explain"], seconds=4, attackers=4)
        assert "429" in explain["attack_statuses"] and set(explain["attack_statuses"]) <= {"200", "429"}, explain
        assert set(explain["cheap_statuses"]) == {"200"}, explain
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text(errors="replace")
