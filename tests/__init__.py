"""Tests mirror the package: one file per feature; browser tests in e2e/."""
