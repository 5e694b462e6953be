"""Queue names, in one place. Bulk work has its own queue so it never delays a fresh upload."""

from enum import StrEnum


class Queue(StrEnum):
    CLASSIFY = "classify"  # a seller's fresh upload: latency matters
    BULK = "bulk"  # reclassification of the catalogue
    TRAINING = "training"  # head training
    MAINTENANCE = "maintenance"  # sweeper and other periodic jobs
