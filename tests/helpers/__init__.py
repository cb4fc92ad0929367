"""Test helpers: checkpoints the tests write in real formats, reference models."""
