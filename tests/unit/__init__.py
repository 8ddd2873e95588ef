"""Unit tests: the pure core on a fake clock, the codec, configuration."""
