"""Beam's local engine with SDK workers forked from a pre-imported zygote."""
