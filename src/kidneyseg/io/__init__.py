"""CT and label-map input/output with full geometry."""

from kidneyseg.io.volume import Volume, read_volume, write_labels, write_volume

__all__ = ["Volume", "read_volume", "write_labels", "write_volume"]
