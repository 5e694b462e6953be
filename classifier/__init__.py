"""Marketplace photo classifier."""
