"""Pretrained backbones' weights: list them, download ahead, or import a file copied by hand (air-gapped)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from ml.backbones import BACKBONES, WeightsUnavailable
from training.pretrained import backbone_fetch, backbone_import, backbone_statuses


class Command(BaseCommand):
    help = (
        "List the pretrained backbones and whether their weights are here; `fetch NAME` downloads (or converts) "
        "them ahead; `import NAME FILE` takes a file copied by hand, after checking its hash."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action")
        actions.add_parser("list", help="the backbones and whether their weights are here (the default)")
        fetch = actions.add_parser("fetch", help="download (Keras applications) or convert (Lite0) the weights")
        fetch.add_argument("name", choices=list(BACKBONES))
        imported = actions.add_parser("import", help="copy a weights file into the cache after its hash check")
        imported.add_argument("name", choices=list(BACKBONES))
        imported.add_argument("file", type=Path)

    def handle(self, *args, action=None, name=None, file=None, **options):
        try:
            if action == "fetch":
                path = backbone_fetch(name=name)
                self.stdout.write(f"{name}: ready ({path})")
            elif action == "import":
                path = backbone_import(name=name, path=file)
                self.stdout.write(f"{name}: imported ({path})")
            else:
                for status in backbone_statuses():
                    present = "present" if status.cached else "missing"
                    self.stdout.write(f"{status.name:30} {present:8} {status.label} — from {status.source}")
        except WeightsUnavailable as error:
            raise CommandError(str(error)) from None
