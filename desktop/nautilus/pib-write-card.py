"""Nautilus (nautilus-python) extension: "Write to SD card with pi-builder" on .img,
.img.zst and .img.xz files. It opens a terminal running pib-client flash FILE, which asks
which card to write."""

import subprocess

import gi

try:
    gi.require_version("Nautilus", "4.0")
except ValueError:
    gi.require_version("Nautilus", "3.0")
from gi.repository import GObject, Nautilus  # noqa: E402

LAUNCHER = "@libexecdir@/pi-builder/pib-write-card"
SUFFIXES = (".img", ".img.zst", ".img.xz")


def image_path(files):
    """The local path of the one selected image, or None."""
    if len(files) != 1:
        return None
    f = files[0]
    if f.get_uri_scheme() != "file" or f.is_directory():
        return None
    if not f.get_name().endswith(SUFFIXES):
        return None
    return f.get_location().get_path()


class PiBuilderWriteCard(GObject.GObject, Nautilus.MenuProvider):
    # Nautilus 43 and later call get_file_items(files); older ones (window, files).
    def get_file_items(self, *args):
        path = image_path(args[-1])
        if path is None:
            return []
        item = Nautilus.MenuItem(
            name="PiBuilder::WriteCard",
            label="Write to SD card with pi-builder",
            tip="Write this image to an SD card and verify it",
        )
        item.connect("activate", self.activate, path)
        return [item]

    def activate(self, _item, path):
        subprocess.Popen([LAUNCHER, "--terminal", path], start_new_session=True)
